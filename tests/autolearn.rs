//! Auto-learn in the service: a confident verdict at check time is learned
//! (through the writer queue, off the check's path), recorded in the
//! journal as auto-learned, so a user's label confirms it and a correction
//! relearns it; unsure mail and mail already firmly in its class are not
//! learned.

use hamlet::Class;
use hamlet::autolearn::AutoLearn;
use hamlet::classify::Params;
use hamlet::engine::{Engine, LearnOutcome};
use hamlet::service::Service;
use hamlet::store::{MemoryStore, TokenStore};
use std::sync::Arc;
use std::time::Duration;

const SPAM: &str = "From: deals@offers.example\r\nSubject: Cheap pills now\r\n\r\nBuy cheap pills now, best prices, click here.\r\n";
const SPAM2: &str = "From: promo@offers.example\r\nSubject: Cheap pills today\r\n\r\nCheap pills today, best prices, click here now.\r\n";
const HAM: &str = "From: alice@example.org\r\nSubject: Minutes of Tuesday\r\n\r\nThe meeting minutes are attached, see you Tuesday.\r\n";
const OTHER: &str = "From: carol@example.net\r\nSubject: Garden\r\n\r\nTomatoes and basil this year.\r\n";

fn learned(svc: &Service<MemoryStore>) -> (u64, u64) {
    let m = svc.engine().store().read().unwrap().state().unwrap().messages;
    (m.spam, m.ham)
}

async fn wait_for(svc: &Service<MemoryStore>, want: (u64, u64)) {
    for _ in 0..200 {
        if learned(svc) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("learned counts {:?}, expected {want:?}", learned(svc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confident_verdicts_are_learned_and_corrections_relearn_them() {
    // A tiny model: bands wide enough for it, one message per class to start.
    let rule = AutoLearn { enabled: true, spam_min: 0.91, spam_max: 1.0, ham_min: 0.0, ham_max: 0.19, max_ratio: 3.0, min_per_class: 1 };
    rule.check(0.2, 0.9).unwrap();
    // No early-model shrink, which would call every verdict of so small a model unsure.
    let svc = Service::builder(Engine::new(MemoryStore::new(), Params { maturity: 0.0, ..Params::default() })).autolearn(Some(rule)).build().unwrap();
    let svc = Arc::new(svc);
    svc.start_autolearn();

    svc.train(None, SPAM.into(), Some(Class::Spam), None).await.unwrap();
    // One class only: the model cannot tell the classes apart (0.5), and
    // nothing is auto-learned (nor would be: the minimum per class).
    let s = svc.check("test", None, SPAM2.into(), None).await.unwrap().score;
    assert_eq!(s.probability, 0.5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(learned(&svc), (1, 0));

    svc.train(None, HAM.into(), Some(Class::Ham), None).await.unwrap();
    let s = svc.check("test", None, SPAM2.into(), None).await.unwrap().score;
    assert!(s.probability >= 0.91 && s.probability < 1.0, "{}", s.probability);
    wait_for(&svc, (2, 1)).await;
    // In the journal, marked as auto-learned: a guess, not a label.
    let entry = || svc.engine().store().read().unwrap().journal(&hamlet::digest::digest(SPAM2.as_bytes())).unwrap().unwrap();
    assert!(entry().auto, "an auto-learn is journaled as such");
    // A user's label of the same class confirms it (the counts stay), once.
    assert_eq!(svc.train(None, SPAM2.into(), Some(Class::Spam), None).await.unwrap(), LearnOutcome::Confirmed);
    assert!(!entry().auto, "an explicit learn records a confirmed label");
    assert_eq!(learned(&svc), (2, 1));
    assert_eq!(svc.train(None, SPAM2.into(), Some(Class::Spam), None).await.unwrap(), LearnOutcome::AlreadyLearned);
    // And the user's correction moves it.
    assert_eq!(svc.train(None, SPAM2.into(), Some(Class::Ham), None).await.unwrap(), LearnOutcome::Relearned);
    assert_eq!(learned(&svc), (1, 2));
    // Checked again (it now scores firmly ham, in the ham band): a message
    // in the journal is not even queued, so a rescan can never undo a
    // correction.
    let s = svc.check("test", None, SPAM2.into(), None).await.unwrap().score;
    assert!(s.probability <= 0.19, "{}", s.probability);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(learned(&svc), (1, 2));
    assert!(!entry().auto);
    let metrics = svc.metrics().render(0, 0);
    assert!(metrics.contains("autolearned") && !metrics.contains("autolearn skipped"), "{metrics}");

    // Unsure mail is never learned.
    let s = svc.check("test", None, OTHER.into(), None).await.unwrap().score;
    assert!(s.probability > 0.19 && s.probability < 0.91, "{}", s.probability);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(learned(&svc), (1, 2));
}
