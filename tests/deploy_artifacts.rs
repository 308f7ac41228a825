//! The deployment artefacts name only metrics the server exports: every `llmcm_*` series in the
//! Grafana dashboard and the Prometheus alert rules (histogram `_bucket`/`_sum`/`_count` series
//! by their base name) is a metric name the code records or describes. The dashboard is valid
//! JSON with a panel per query. (`promtool test rules` and `systemd-analyze verify` run in CI:
//! tools/api-checks.sh, tools/deploy-checks.sh.)

use std::collections::BTreeSet;
use std::path::Path;

fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("llmcm_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = text[start..end].to_owned();
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base.to_owned();
            }
        }
        out.insert(name);
        i = end;
    }
    out
}

fn source_text(dir: &Path, out: &mut String) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            source_text(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn dashboards_and_alerts_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut src = String::new();
    source_text(&root.join("src"), &mut src);
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana/llmcm-dashboard.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = doc["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    assert!(
        panels
            .iter()
            .all(|p| !p["targets"].as_array().unwrap().is_empty())
    );
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/llmcm-rules.yml")).unwrap();
    let mut checked = 0;
    for (what, text) in [("dashboard", dashboard), ("alert rules", rules)] {
        for name in names_in(&text) {
            assert!(
                src.contains(&format!("\"{name}\"")),
                "{what} names {name}, which the code never records"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
}
