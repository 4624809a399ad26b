//! Evaluation: the TREC on-line protocol in-process (classify each message in
//! order, then train it with its true label), k-fold cross-validation, the
//! TREC figures, and an SVG ROC curve.
//!
//! The figures are computed as `shared/tools/trec-run` computes them
//! (threshold 0.5, ties counted half in the ROC area, logits clamped at 1e-7
//! for lam%), so an in-process run and a trec-run over `hamlet check` /
//! `hamlet train` on the same index print the same numbers, with one
//! exception: the ROC area (and sm% at 0.1% ham) ranks messages by the
//! score's logit, not by its probability. The two orders differ only where
//! the probability rounds to exactly 1 (a logit past about 36.7). The default
//! combination never gets there (|logit| ≤ 11 + 2 + 20), but Fisher alone
//! (`--combining fisher`) does for most confident spam. Ranked by that rounded
//! probability, a ham at 1 is tied with every such spam: on the spam-heavy
//! stream one newsletter made Fisher alone's second half 0.0157 instead of
//! 0.0054 (bench/RESULTS.md, 2026-12-07, night).

use crate::classify::Params;
use crate::engine::{Action, Engine, Prepared};
use crate::mailbox::Entry;
use crate::store::{MemoryStore, TokenStore};
use crate::tokenize::Tokenizer;
use crate::{Class, Result};
use std::fmt::Write as _;

/// When the on-line run trains a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMode {
    /// Every message (the default, and trec-run's `on-everything`).
    OnEverything,
    /// Misclassified messages, and those scored exactly 0.5 (the model has
    /// no opinion: a class without messages yet). trec-run's `on-error`
    /// counts a ham at 0.5 as right and does not train it, so from an empty
    /// model it never learns ham from hamlet; seed the model first there.
    OnError,
    /// As `OnError`, plus every message in the unsure band.
    OnErrorOrUnsure,
}

impl std::str::FromStr for TrainMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "on-everything" => Ok(TrainMode::OnEverything),
            "on-error" => Ok(TrainMode::OnError),
            "on-error-or-unsure" => Ok(TrainMode::OnErrorOrUnsure),
            _ => Err(format!("unknown training mode {s:?} (on-everything, on-error, on-error-or-unsure)")),
        }
    }
}

/// One judged message: its true class, the filter's spam probability, and
/// the logit it came from (what the ROC area ranks by).
#[derive(Debug, Clone, Copy)]
pub struct Judgement {
    pub spam: bool,
    pub score: f64,
    pub rank: f64,
}

impl Judgement {
    fn of(spam: bool, score: &crate::classify::Score) -> Judgement {
        Judgement { spam, score: score.probability, rank: score.logit }
    }
}

/// The TREC figures.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub messages: usize,
    pub ham: usize,
    pub spam: usize,
    /// Ham misclassification at the threshold.
    pub hm: f64,
    /// Spam misclassification at the threshold.
    pub sm: f64,
    /// Logistic average misclassification.
    pub lam: f64,
    /// Spam misclassification with the cut-off moved to lose 0.1% of ham.
    pub sm_at_hm01: f64,
    /// 1 − area under the ROC curve.
    pub one_minus_roca: f64,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// Computes the TREC figures at `threshold` (scores above it are spam).
pub fn metrics(j: &[Judgement], threshold: f64) -> Metrics {
    let (spam, ham): (Vec<&Judgement>, Vec<&Judgement>) = j.iter().partition(|x| x.spam);
    let hm = ham.iter().filter(|x| x.score > threshold).count() as f64 / ham.len().max(1) as f64;
    let sm = spam.iter().filter(|x| x.score <= threshold).count() as f64 / spam.len().max(1) as f64;
    let ranks = |v: &[&Judgement]| v.iter().map(|x| x.rank).collect::<Vec<f64>>();
    let lam = 1.0 / (1.0 + (-((logit(hm) + logit(sm)) / 2.0)).exp());
    Metrics {
        messages: j.len(),
        ham: ham.len(),
        spam: spam.len(),
        hm,
        sm,
        lam,
        sm_at_hm01: sm_at_hm(&ranks(&ham), &ranks(&spam), 0.001),
        one_minus_roca: 1.0 - auc(j),
    }
}

/// Mann-Whitney AUC over the ranks (logits), ties counted half.
pub fn auc(j: &[Judgement]) -> f64 {
    let mut ranked: Vec<&Judgement> = j.iter().collect();
    ranked.sort_by(|a, b| a.rank.total_cmp(&b.rank));
    let n_spam = j.iter().filter(|x| x.spam).count() as f64;
    let n_ham = j.len() as f64 - n_spam;
    if n_spam == 0.0 || n_ham == 0.0 {
        return f64::NAN;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < ranked.len() {
        let mut k = i;
        while k < ranked.len() && ranked[k].rank == ranked[i].rank {
            k += 1;
        }
        let mid = (i + 1 + k) as f64 / 2.0;
        rank_sum += mid * ranked[i..k].iter().filter(|x| x.spam).count() as f64;
        i = k;
    }
    (rank_sum - n_spam * (n_spam + 1.0) / 2.0) / (n_spam * n_ham)
}

fn sm_at_hm(ham: &[f64], spam: &[f64], target: f64) -> f64 {
    if ham.is_empty() || spam.is_empty() {
        return f64::NAN;
    }
    let mut h: Vec<f64> = ham.to_vec();
    h.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target * h.len() as f64).floor() as usize;
    let cut = if allowed < h.len() { h[allowed] } else { f64::NEG_INFINITY };
    spam.iter().filter(|&&s| s <= cut).count() as f64 / spam.len() as f64
}

impl Metrics {
    /// The report `hamlet eval` prints; the last line is `1-ROCA%=<value>`.
    pub fn report(&self, seconds: f64) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "messages={} ham={} spam={}", self.messages, self.ham, self.spam);
        let _ = writeln!(
            s,
            "hm%={:.3} sm%={:.3} lam%={:.3} sm%@hm0.1={:.3}",
            100.0 * self.hm,
            100.0 * self.sm,
            100.0 * self.lam,
            100.0 * self.sm_at_hm01
        );
        let _ = writeln!(s, "messages/s={:.0} seconds={:.1}", self.messages as f64 / seconds.max(1e-9), seconds);
        let _ = write!(s, "1-ROCA%={:.4}", 100.0 * self.one_minus_roca);
        s
    }
}

/// Reads and tokenizes labelled entries, in parallel, keeping their order.
pub fn prepare_all(tokenizer: &Tokenizer, entries: &[Entry], threads: usize) -> Result<Vec<(Class, Prepared)>> {
    let labels = entries
        .iter()
        .map(|e| e.label.ok_or_else(|| crate::Error::Invalid(format!("{}: no label (use a TREC index)", e.name()))))
        .collect::<Result<Vec<Class>>>()?;
    Ok(labels.into_iter().zip(crate::engine::bulk::prepare_entries(tokenizer, entries, threads)?).collect())
}

/// Runs the on-line protocol over prepared messages on an empty in-memory model.
pub fn online(params: &Params, messages: &[(Class, Prepared)], mode: TrainMode) -> Result<Vec<Judgement>> {
    online_with(&empty(params), messages, mode)
}

/// The empty in-memory model the on-line protocol starts from.
pub fn empty(params: &Params) -> Engine<MemoryStore> {
    let mut engine = Engine::new(MemoryStore::new(), params.clone());
    engine.day = Some(crate::store::today());
    engine
}

/// Runs the on-line protocol with a given engine (and whatever it already knows).
pub fn online_with<S: TokenStore>(engine: &Engine<S>, messages: &[(Class, Prepared)], mode: TrainMode) -> Result<Vec<Judgement>> {
    let mut out = Vec::with_capacity(messages.len());
    for (class, p) in messages {
        let score = {
            let view = engine.store().read()?;
            engine.score(&*view, &p.tokens, &p.grams)?
        };
        let spam = *class == Class::Spam;
        out.push(Judgement::of(spam, &score));
        // As in the engine: exactly 0.5 ("no idea") is not wrong. But it is
        // a message to learn from: a model that scores 0.5 because a class
        // has no messages yet would otherwise never learn one on error.
        let wrong = if spam { score.probability < 0.5 } else { score.probability > 0.5 };
        let no_opinion = score.probability == 0.5;
        let unsure = score.verdict == crate::classify::Verdict::Unsure || no_opinion;
        let train = match mode {
            TrainMode::OnEverything => true,
            TrainMode::OnError => wrong || no_opinion,
            TrainMode::OnErrorOrUnsure => wrong || unsure,
        };
        if train {
            engine.train(std::slice::from_ref(&(p.clone(), Action::Learn(*class))))?;
        }
    }
    Ok(out)
}

/// What trains the model after the seed, in [`seeded`].
#[derive(Debug, Clone, Default)]
pub struct AfterSeed {
    /// Auto-learn from the model's own verdicts by this rule.
    pub autolearn: Option<crate::autolearn::AutoLearn>,
    /// A user corrects each misclassified message (learned with its true
    /// label), as a mail user moving mail in or out of Junk would.
    pub corrections: bool,
}

/// The auto-learn experiment: the first `seed` messages are learned with
/// their true labels; the rest are classified in order, and then learned
/// only as `after` says (never with the truth, except as a correction).
/// Judgements are for the messages after the seed. Returns them and the
/// number of auto-learns and of those that took the wrong class.
pub fn seeded<S: TokenStore>(
    engine: &Engine<S>,
    messages: &[(Class, Prepared)],
    seed: usize,
    after: &AfterSeed,
) -> Result<(Vec<Judgement>, usize, usize)> {
    let seed = seed.min(messages.len());
    let batch: Vec<(Prepared, Action)> = messages[..seed].iter().map(|(c, p)| (p.clone(), Action::Learn(*c))).collect();
    engine.train(&batch)?;
    let (mut out, mut learned, mut wrong_learns) = (Vec::with_capacity(messages.len() - seed), 0, 0);
    for (class, p) in &messages[seed..] {
        let (score, totals) = {
            let view = engine.store().read()?;
            (engine.score(&*view, &p.tokens, &p.grams)?, view.state()?.messages)
        };
        let spam = *class == Class::Spam;
        out.push(Judgement::of(spam, &score));
        let wrong = if spam { score.probability < 0.5 } else { score.probability > 0.5 };
        let learn =
            if after.corrections && wrong { Some(*class) } else { after.autolearn.as_ref().and_then(|a| a.decide(score.probability, totals)) };
        if let Some(c) = learn {
            if !(after.corrections && wrong) {
                learned += 1;
                wrong_learns += usize::from(c != *class);
            }
            engine.train(std::slice::from_ref(&(p.clone(), Action::Learn(c))))?;
        }
    }
    Ok((out, learned, wrong_learns))
}

/// k-fold cross-validation: each fold scored by a model trained on the others.
pub fn kfold(params: &Params, messages: &[(Class, Prepared)], k: usize) -> Result<Vec<Judgement>> {
    let k = k.max(2);
    let mut out = Vec::with_capacity(messages.len());
    for fold in 0..k {
        let mut engine = Engine::new(MemoryStore::new(), params.clone());
        engine.day = Some(crate::store::today());
        let train: Vec<(Prepared, Action)> =
            messages.iter().enumerate().filter(|(i, _)| i % k != fold).map(|(_, (c, p))| (p.clone(), Action::Learn(*c))).collect();
        engine.train(&train)?;
        let view = engine.store().read()?;
        for (_, (c, p)) in messages.iter().enumerate().filter(|(i, _)| i % k == fold) {
            let s = engine.score(&*view, &p.tokens, &p.grams)?;
            out.push(Judgement::of(*c == Class::Spam, &s));
        }
    }
    Ok(out)
}

/// An SVG ROC curve in TREC's style: % ham misclassified (x) against % spam
/// misclassified (y), both on logit scales, so the region that matters (low
/// false positives) is not squashed into a corner.
pub fn roc_svg(j: &[Judgement], title: &str) -> String {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    let mut sorted: Vec<&Judgement> = j.iter().collect();
    sorted.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    let n_ham = j.iter().filter(|x| !x.spam).count().max(1) as f64;
    let n_spam = j.iter().filter(|x| x.spam).count().max(1) as f64;
    // Sweep the threshold from high to low: ham above it are misclassified,
    // spam at or below it are.
    let (mut ham_above, mut spam_above) = (0.0, 0.0);
    pts.push((0.0, 1.0));
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i].rank;
        while i < sorted.len() && sorted[i].rank == s {
            if sorted[i].spam {
                spam_above += 1.0;
            } else {
                ham_above += 1.0;
            }
            i += 1;
        }
        pts.push((ham_above / n_ham, 1.0 - spam_above / n_spam));
    }
    let (w, h, m) = (640.0, 480.0, 60.0);
    let lo = logit_axis(0.0001);
    let hi = logit_axis(0.5);
    let x = |p: f64| m + (logit_axis(p).clamp(lo, hi) - lo) / (hi - lo) * (w - 2.0 * m);
    let y = |p: f64| h - m - (logit_axis(p).clamp(lo, hi) - lo) / (hi - lo) * (h - 2.0 * m);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        w / 2.0,
        xml_escape(title)
    );
    for t in [0.0001, 0.001, 0.01, 0.1, 0.5] {
        let (xt, yt) = (x(t), y(t));
        let label = format!("{}%", t * 100.0);
        let _ = write!(
            svg,
            "<line x1=\"{xt:.1}\" y1=\"{m}\" x2=\"{xt:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{xt:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\
             <line x1=\"{m}\" y1=\"{yt:.1}\" x2=\"{:.1}\" y2=\"{yt:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            h - m,
            h - m + 16.0,
            w - m,
            m - 6.0,
            yt + 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">% ham misclassified (logit scale)</text>\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">% spam misclassified (logit scale)</text>\
         <rect x=\"{m}\" y=\"{m}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/><polyline fill=\"none\" stroke=\"#c22\" stroke-width=\"2\" points=\"",
        w / 2.0,
        h - 20.0,
        h / 2.0,
        h / 2.0,
        w - 2.0 * m,
        h - 2.0 * m
    );
    for (fx, fy) in pts {
        let _ = write!(svg, "{:.1},{:.1} ", x(fx), y(fy));
    }
    svg.push_str("\"/></svg>\n");
    svg
}

fn logit_axis(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(v: &[(bool, f64)]) -> Vec<Judgement> {
        v.iter().map(|&(spam, score)| Judgement { spam, score, rank: logit(score) }).collect()
    }

    #[test]
    fn auc_with_ties_counts_half() {
        assert_eq!(auc(&j(&[(false, 0.1), (true, 0.9)])), 1.0);
        assert_eq!(auc(&j(&[(false, 0.5), (true, 0.5)])), 0.5);
        assert_eq!(auc(&j(&[(false, 0.9), (true, 0.1)])), 0.0);
    }

    #[test]
    fn auc_ranks_by_logit_where_probabilities_round_to_one() {
        let spam = Judgement { spam: true, score: 1.0, rank: 50.0 };
        let ham = Judgement { spam: false, score: 1.0, rank: 40.0 };
        assert_eq!(auc(&[ham, spam]), 1.0, "ordered by logit, not tied at probability 1");
        assert_eq!(auc(&[Judgement { rank: 60.0, ..ham }, spam]), 0.0);
        let m = metrics(&[ham, spam, Judgement { spam: true, score: 0.2, rank: logit(0.2) }], 0.5);
        assert_eq!(m.hm, 1.0, "thresholds still use the probability");
    }

    #[test]
    fn metrics_at_threshold() {
        let m = metrics(&j(&[(false, 0.1), (false, 0.6), (true, 0.9), (true, 0.4)]), 0.5);
        assert_eq!(m.hm, 0.5);
        assert_eq!(m.sm, 0.5);
        assert!((m.lam - 0.5).abs() < 1e-12);
    }

    #[test]
    fn on_error_learns_from_an_empty_model() {
        // An empty model scores everything 0.5 ("no idea", not an error);
        // on-error must still learn those, or it never learns anything.
        let tk = crate::tokenize::Tokenizer::default();
        let mk = |class, body: &str| {
            let raw = format!("From: a@example.org\r\nSubject: {body}\r\n\r\n{body}\r\n");
            (class, Prepared::new(&tk, raw.as_bytes()))
        };
        let mut stream = Vec::new();
        for i in 0..6 {
            stream.push(mk(Class::Spam, &format!("cheap pills viagra offer {i}")));
            stream.push(mk(Class::Ham, &format!("meeting notes for the project {i}")));
        }
        let j = online(&Params::default(), &stream, TrainMode::OnError).unwrap();
        assert_eq!(j[0].score, 0.5);
        let late = &j[8..];
        assert!(late.iter().all(|j| (j.score > 0.5) == j.spam), "{late:?}");
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let s = roc_svg(&j(&[(false, 0.1), (true, 0.9), (false, 0.2)]), "a<b");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a&lt;b"));
    }
}
