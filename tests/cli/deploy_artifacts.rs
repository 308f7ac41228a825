//! The deployment artefacts name only metrics the server exports: every `llmcm_*` series in the
//! Grafana dashboard and the Prometheus alert rules (histogram `_bucket`/`_sum`/`_count` series
//! by their base name) is a metric name the code records or describes. The dashboard is valid
//! JSON with a panel per query. (`promtool test rules` and `systemd-analyze verify` run in CI:
//! tools/api-checks.sh, tools/deploy-checks.sh.)

use crate::cli_lines;

use std::collections::BTreeSet;

use cli_lines::{assert_commands_parse, commands_in};
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

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The container entrypoint, run for real: with no arguments it execs `llmcm serve` (so the
/// spawned process *is* the server, receives SIGTERM itself and exits 0); an unwritable data
/// directory exits 78 with a clear message; other commands run as given.
#[test]
fn container_entrypoint_execs_the_server_and_runs_commands() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("llmcm.toml");
    std::fs::write(&config, "").unwrap();
    let entrypoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/container/entrypoint.sh");
    let run = |args: &[&str], data: &Path| {
        let mut c = Command::new("sh");
        c.arg(&entrypoint)
            .args(args)
            .env("LLMCM_BIN", env!("CARGO_BIN_EXE_llmcm"))
            .env("LLMCM_DATA_DIR", data)
            .env("LLMCM_LISTEN", "127.0.0.1:0")
            .env("LLMCM_CONFIG", &config)
            .env("LLMCM_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn");
        c
    };
    let data = tmp.path().join("data");
    let mut child = run(&[], &data).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", child.id())).unwrap();
    assert_eq!(comm.trim(), "llmcm", "the entrypoint execs the server");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "SIGTERM: drained, exit 0"
    );

    // A command other than serve runs as given (here: check the data directory just written).
    let verified = run(&["verify", "--data-dir", data.to_str().unwrap()], &data)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");

    // A data directory that cannot be created or written: exit 78 (EX_CONFIG), one clear line.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let refused = run(&["serve"], &file.join("data")).output().unwrap();
    assert_eq!(refused.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not writable"), "{stderr}");
}

/// The Kubernetes manifests and systemd units agree with the code and with each other: the
/// ConfigMap's llmcm.toml is a valid config; every `llmcm` command they run parses; the
/// termination grace period (Kubernetes) equals TimeoutStopSec (systemd) and leaves room for the
/// configured drain; probes use the health endpoints.
#[test]
fn manifests_and_units_agree_with_the_code() {
    let config_map = read("deploy/kubernetes/config.yaml");
    let toml: String = config_map
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("llmcm.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l.trim())))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("llmcm.toml");
    std::fs::write(&path, &toml).unwrap();
    let env = |name: &str| (name == "LLMCM_LISTEN").then(|| "0.0.0.0:7070".to_owned());
    let config = llmcm::config::Config::load_with_env(Some(&path), env)
        .unwrap_or_else(|e| panic!("deploy/kubernetes/config.yaml llmcm.toml: {e}\n{toml}"));
    config.validate().unwrap();
    let drain = config.http.shutdown_drain.get();

    let statefulset = read("deploy/kubernetes/statefulset.yaml");
    let grace: u64 = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .expect("a grace period")
        .trim()
        .parse()
        .unwrap();
    let unit = read("deploy/systemd/llmcm.service");
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec")
        .parse()
        .unwrap();
    assert_eq!(grace, stop, "Kubernetes and systemd stop bounds differ");
    assert!(
        grace >= drain.as_secs() + 10,
        "grace {grace}s leaves no room after the {drain:?} drain"
    );
    for path in ["path: /health/live", "path: /health/ready"] {
        assert!(
            statefulset.contains(path),
            "statefulset.yaml lacks a probe on {path}"
        );
    }

    // The server writes directory repositories itself (`backup create`, archiving): whatever
    // repository path the backup unit uses must be writable under the server's sandbox too.
    let backup_unit = read("deploy/systemd/llmcm-backup@.service");
    for path in backup_unit
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
    {
        assert!(
            unit.lines().any(|l| l.starts_with("ReadWritePaths=")
                && l.trim_start_matches("ReadWritePaths=")
                    .trim_start_matches('-')
                    == path),
            "llmcm.service cannot write {path}, which the backup unit uses as the repository"
        );
    }

    let mut commands = Vec::new();
    for f in [
        "deploy/kubernetes/backup-cronjobs.yaml",
        "deploy/kubernetes/statefulset.yaml",
        "deploy/systemd/llmcm.service",
        "deploy/systemd/llmcm-backup@.service",
    ] {
        let text = read(f);
        // Units: only what they execute (not Description= and comments).
        let text: String = if f.ends_with(".service") {
            text.lines()
                .filter(|l| l.starts_with("Exec"))
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            text
        };
        let found = commands_in(&text);
        commands.extend(found.iter().map(|c| c.replace("%i", "full")));
    }
    assert!(commands.len() >= 6, "{commands:?}");
    assert_commands_parse("deploy/", &commands);
}

/// docs/operations/monitoring.md documents every metric the server describes and every alert in
/// the rules file (and names no metric the code does not record).
#[test]
fn monitoring_guide_covers_every_metric_and_alert() {
    let guide = read("docs/operations/monitoring.md");
    let metrics = read("src/api/metrics.rs");
    let described: BTreeSet<String> = metrics
        .split("describe_")
        .skip(1)
        .filter_map(|chunk| {
            let start = chunk.find('"')? + 1;
            let end = start + chunk[start..].find('"')?;
            Some(chunk[start..end].to_owned())
        })
        .filter(|n| n.starts_with("llmcm_"))
        .collect();
    assert!(described.len() >= 25, "{described:?}");
    for name in &described {
        assert!(
            guide.contains(&format!("`{name}`")),
            "monitoring.md does not document {name}"
        );
    }
    let mut src = String::new();
    source_text(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut src);
    for name in names_in(&guide) {
        assert!(
            src.contains(&format!("\"{name}\"")),
            "monitoring.md names {name}, which the code never records"
        );
    }
    let rules = read("deploy/prometheus/llmcm-rules.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 13);
    for alert in alerts {
        assert!(
            guide.contains(&format!("| {alert} |")),
            "monitoring.md's alert table lacks {alert}"
        );
    }
}

/// The backup schedule is the same in the guide, the systemd timers and the Kubernetes CronJobs
/// (an operator once found the timers an hour-quarter off what the guide said).
#[test]
fn backup_schedules_agree_everywhere() {
    let guide = read("docs/operations/backup-restore.md");
    let cron = read("deploy/kubernetes/backup-cronjobs.yaml");
    for (kind, on_calendar, cron_line, said) in [
        (
            "incremental",
            "*-*-* *:15:00",
            "15 * * * *",
            "hourly incremental at :15",
        ),
        (
            "differential",
            "*-*-* 02:45:00",
            "45 2 * * *",
            "daily differential at 02:45",
        ),
        (
            "full",
            "Sun *-*-* 03:30:00",
            "30 3 * * 0",
            "weekly full on\nSunday 03:30",
        ),
    ] {
        let timer = read(&format!("deploy/systemd/llmcm-backup-{kind}.timer"));
        assert!(
            timer.contains(&format!("OnCalendar={on_calendar}\n")),
            "{kind} timer: {timer}"
        );
        assert!(
            cron.contains(&format!("schedule: \"{cron_line}\"")),
            "{kind} CronJob"
        );
        assert!(guide.contains(said), "the guide does not say {said:?}");
    }
}
