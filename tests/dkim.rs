//! DKIM and DMARC at the content stage, over real DNS: a loopback DNS
//! server (`common::fakedns`) publishes a DKIM key (made by `openssl`, which
//! `scripts/test.sh` installs) and a DMARC record; messages signed with the
//! key go through `Service::check`, and the outcomes and tokens are read
//! back from its report.

mod common;

use common::fakedns::{FakeDns, Node, Zone};
use hamlet::classify::Params;
use hamlet::engine::Engine;
use hamlet::envelope::{Checker, Envelope, EnvelopeConfig, Known};
use hamlet::service::Service;
use hamlet::store::MemoryStore;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::rr::rdata::TXT;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use std::process::Command;
use std::sync::Arc;

const MESSAGE: &str = "From: Alice <alice@example.test>\r\nTo: erin@corp.example\r\nSubject: Quarterly figures\r\n\
    Message-ID: <q3@example.test>\r\n\r\nThe figures for the third quarter are attached.\r\n";

/// An RSA key from openssl: (PKCS#8 PEM private key, base64 public key).
fn rsa_key(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("dkim.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e} (run scripts/test.sh, or apt-get install -y openssl)"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key.to_str().unwrap()]);
    let public = run(&["pkey", "-in", key.to_str().unwrap(), "-pubout", "-outform", "PEM"]);
    let b64: String = String::from_utf8(public).unwrap().lines().filter(|l| !l.starts_with("-----")).collect();
    (std::fs::read_to_string(&key).unwrap(), b64)
}

fn txt(s: &str) -> RData {
    // DNS strings hold at most 255 bytes: long records are split.
    RData::TXT(TXT::new(s.as_bytes().chunks(255).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect()))
}

fn sign(pem: &str, message: &str) -> String {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap())).unwrap();
    let sig = DkimSigner::from_key(key)
        .domain("example.test")
        .selector("s1")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(message.as_bytes())
        .unwrap();
    format!("{}{message}", sig.to_header())
}

async fn service(dns: &FakeDns) -> Arc<Service<MemoryStore>> {
    let mut cfg = EnvelopeConfig::default();
    cfg.dkim.enabled = true;
    cfg.dns.nameservers = vec![dns.nameserver()];
    cfg.dns.timeout_ms = 500;
    Arc::new(Service::builder(Engine::new(MemoryStore::new(), Params::default())).envelope(Checker::new(cfg, None).unwrap()).build().unwrap())
}

fn tokens(report: &Option<hamlet::envelope::Report>) -> Vec<String> {
    report.as_ref().map(|r| r.tokens()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_and_dmarc_outcomes_become_tokens() {
    let dir = std::env::temp_dir().join(format!("hamlet-dkim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pem, public) = rsa_key(&dir);
    let dns = FakeDns::start().await;
    let mut zone = Zone::new();
    zone.insert("s1._domainkey.example.test".into(), Node { records: vec![txt(&format!("v=DKIM1; k=rsa; p={public}"))], timeout: false });
    zone.insert("_dmarc.example.test".into(), Node { records: vec![txt("v=DMARC1; p=reject")], timeout: false });
    zone.insert("example.test".into(), Node::default());
    dns.set_zone(zone);
    let svc = service(&dns).await;

    // Signed and intact: DKIM pass by example.test, DMARC pass (aligned).
    let signed = sign(&pem, MESSAGE);
    let report = svc.check("test", None, signed.clone().into_bytes(), None).await.unwrap().report;
    assert_eq!(tokens(&report), ["env:dkim=pass", "env:dkim-d=example.test", "env:dmarc=pass"], "{report:?}");

    // The body changed after signing: DKIM fails, and so does DMARC, under p=reject.
    let tampered = signed.replace("third quarter", "fourth quarter");
    let report = svc.check("test", None, tampered.into_bytes(), None).await.unwrap().report;
    assert_eq!(tokens(&report), ["env:dkim=fail", "env:dmarc=fail:reject"], "{report:?}");
    let rules: Vec<&str> = report.as_ref().unwrap().outcomes.iter().map(|o| o.rule).collect();
    assert_eq!(rules, ["DKIM_FAIL", "DMARC_FAIL_REJECT"]);

    // Unsigned, but the envelope's SPF passed for the From: domain: DMARC
    // passes through SPF alignment, and the envelope's outcomes are there too.
    let env = Envelope {
        client_ip: Some("192.0.2.55".parse().unwrap()),
        client_name: Some("mail.example.test".into()),
        helo: "mail.example.test".into(),
        mail_from: "alice@example.test".into(),
        rcpt_to: vec!["erin@corp.example".into()],
        sasl_user: None,
        known: Known::ALL,
    };
    let report = svc.check("test", None, MESSAGE.as_bytes().to_vec(), Some(env)).await.unwrap().report;
    assert_eq!(tokens(&report), ["env:dkim=none", "env:dmarc=fail:reject"], "no SPF ran, so nothing aligns: {report:?}");

    // A learn carries the same tokens into the model.
    svc.train(None, signed.into_bytes(), Some(hamlet::Class::Ham), None).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
