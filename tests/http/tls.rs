//! HTTPS: the server serves `[tls]` with a certificate made by the test; clients that trust its
//! authority get through (the reqwest client, the CLI with `--ca-file` or `LLMCM_CA_FILE`),
//! others and plain HTTP do not; SIGHUP swaps in a new certificate, and a certificate that
//! does not load keeps the old one in use. A server with tokens refuses to listen beyond
//! loopback in clear text. Failed authentications are counted by reason.
//!
//! How: rcgen makes two authorities and a leaf for 127.0.0.1 from each; the real binary
//! serves them on loopback.

use crate::server;

use std::path::Path;
use std::process::Command;

use llmcm::config::Role;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use server::{Server, token};

/// An authority (PEM) and a leaf certificate and key (PEM) for 127.0.0.1 signed by it.
fn authority_and_leaf(name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("llmcm test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

fn client_trusting(ca_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn https_with_a_reloadable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = authority_and_leaf("one");
    let (ca2, cert2, key2) = authority_and_leaf("two");
    let ca1_path = write(dir.path(), "ca1.pem", &ca1);
    let cert_path = write(dir.path(), "cert.pem", &cert1);
    let key_path = write(dir.path(), "key.pem", &key1);
    let (admin, entry) = token("admin", Role::Admin, &[]);
    let config = format!("[tls]\ncert = {cert_path:?}\nkey = {key_path:?}\n\n{entry}");
    let s = Server::start(&dir.path().join("data"), &config, &[]);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    let one = client_trusting(&ca1);
    let put = one
        .put(s.url("/v1/kv/app/model"))
        .bearer_auth(&admin)
        .body(r#"{"model":"m1"}"#)
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    // A client that does not trust the authority, and plain HTTP, get nowhere.
    assert!(
        client_trusting(&ca2)
            .get(s.url("/health/live"))
            .send()
            .is_err()
    );
    let plain = s.base.replace("https://", "http://");
    let answer = reqwest::blocking::get(format!("{plain}/health/live"));
    assert!(
        answer.is_err() || !answer.unwrap().status().is_success(),
        "plain HTTP is not served"
    );

    // The CLI: --ca-file, or LLMCM_CA_FILE; without it the system's authorities do not know it.
    let cli = |env_ca: Option<&str>, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_llmcm"));
        c.args(args)
            .env("LLMCM_SERVER", &s.base)
            .env("LLMCM_TOKEN", &admin)
            .env_remove("LLMCM_CA_FILE");
        if let Some(ca) = env_ca {
            c.env("LLMCM_CA_FILE", ca);
        }
        c.output().unwrap()
    };
    let out = cli(None, &["get", "app/model", "--ca-file", &ca1_path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\n  \"model\": \"m1\"\n}"
    );
    let out = cli(Some(&ca1_path), &["get", "app/model"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(None, &["get", "app/model"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A certificate that does not load: the old one stays in use.
    std::fs::write(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    s.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let failures = loop {
        let text = one.get(s.url("/metrics")).send().unwrap().text().unwrap();
        let failures = text
            .lines()
            .find_map(|l| l.strip_prefix("llmcm_tls_reload_failures_total "))
            .map(|v| v.trim().to_owned());
        if failures.is_some() || std::time::Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(failures.as_deref(), Some("1"));
    assert_eq!(one.get(s.url("/health/live")).send().unwrap().status(), 200);

    // A good new certificate from another authority: new connections get it.
    std::fs::write(&cert_path, &cert2).unwrap();
    std::fs::write(&key_path, &key2).unwrap();
    s.signal("HUP");
    let two = client_trusting(&ca2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while two.get(s.url("/health/live")).send().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is not served"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        client_trusting(&ca1)
            .get(s.url("/health/live"))
            .send()
            .is_err()
    );
}

#[test]
fn tokens_are_not_served_in_clear_text_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (_, entry) = token("admin", Role::Admin, &[]);
    let config = dir.path().join("llmcm.toml");
    std::fs::write(&config, &entry).unwrap();
    // Refused before anything listens.
    let out = Command::new(env!("CARGO_BIN_EXE_llmcm"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure-plaintext"), "{stderr}");
    assert!(stderr.contains("[tls]"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn failed_authentications_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_, entry) = token("admin", Role::Admin, &[]);
    let s = Server::start(&dir.path().join("data"), &entry, &[]);
    let c = server::client();
    for (header, _) in [
        (None, "missing"),
        (Some("Bearer llmcm_not_a_token"), "invalid"),
        (Some("Basic YTpi"), "malformed"),
        (Some("Bearer llmcm_also_not"), "invalid"),
    ] {
        let mut req = c.get(s.url("/v1/kv/a"));
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        assert_eq!(req.send().unwrap().status(), 401);
    }
    // A probe is no way to try tokens unseen: a bad token there counts too (none does not).
    let probe = c
        .get(s.url("/health"))
        .header("Authorization", "Bearer llmcm_guess")
        .send()
        .unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(c.get(s.url("/health")).send().unwrap().status(), 200);
    assert_eq!(
        s.metric("llmcm_auth_failures_total{reason=\"missing\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.metric("llmcm_auth_failures_total{reason=\"invalid\"}"),
        Some(3.0)
    );
    assert_eq!(
        s.metric("llmcm_auth_failures_total{reason=\"malformed\"}"),
        Some(1.0)
    );
}
