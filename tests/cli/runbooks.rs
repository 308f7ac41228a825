//! The operations guides are executed: every shell block marked runnable in `docs/operations/`
//! runs against the real binary and a scratch server, like a doc-test for runbooks.
//!
//! Conventions (docs/operations/README.md, "How these documents are tested"):
//! - ```` ```sh runnable ```` blocks run in order, each with `bash -euo pipefail` in the document's
//!   scratch directory; they must exit 0, or the code given as ```` ```sh runnable exit=N ````.
//! - A ```` ```text expected ```` block right after one is compared with what it printed on
//!   stdout: `...` alone on a line matches any lines, `[..]` any text within a line.
//! - The environment the documents assume: `LLMCM_SERVER`, `LLMCM_TOKEN` (an admin token),
//!   `LLMCM_CONFIG`, `LLMCM_DATA_DIR`, `LLMCM_PID` (the server's process, unless the document
//!   starts its own), `LLMCM_REPO` (a directory repository, named `main` in the
//!   server's config), `llmcm` on `PATH`.
//! - `<!-- runbook: own-server -->` in a document: the harness starts no server (the document
//!   starts and stops its own on `LLMCM_LISTEN`); otherwise one runs for the whole document.
//! - Every `llmcm ...` line in any shell block (runnable or not: systemctl or kubectl recipes
//!   included) must parse with the real command-line parser.
//!
//! Every process a block leaves running is stopped when its document ends.

use crate::cli_lines;
use crate::server;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A block may run this long.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

struct Block {
    line: usize,
    text: String,
    shell: bool,
    runnable: bool,
    exit: i32,
    expected: Option<String>,
}

/// The fenced code blocks of a Markdown document, with a runnable block's expected output
/// attached.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let info = info.trim().to_owned();
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let flags: Vec<&str> = words.collect();
        if lang == "text" && flags.contains(&"expected") {
            let previous = out
                .last_mut()
                .filter(|b| b.runnable && b.expected.is_none())
                .unwrap_or_else(|| {
                    panic!(
                        "line {}: an expected block follows no runnable block",
                        n + 1
                    )
                });
            previous.expected = Some(text);
            continue;
        }
        let shell = matches!(lang, "sh" | "bash" | "console");
        let runnable = shell && flags.contains(&"runnable");
        let exit = flags
            .iter()
            .find_map(|f| f.strip_prefix("exit="))
            .map_or(0, |c| c.parse().expect("exit=N"));
        out.push(Block {
            line: n + 1,
            text,
            shell,
            runnable,
            exit,
            expected: None,
        });
    }
    out
}

/// Inline code spans starting with `llmcm ` outside fenced blocks.
fn inline_commands(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("llmcm ") {
                out.push(span.to_owned());
            }
        }
    }
    out
}

/// Whether `actual` matches `expected` (`...` lines, `[..]` within a line).
fn matches(expected: &str, actual: &str) -> bool {
    let exp: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let act: Vec<&str> = actual.lines().map(str::trim_end).collect();
    fn lines(exp: &[&str], act: &[&str]) -> bool {
        match exp.split_first() {
            None => act.is_empty(),
            Some((&"...", rest)) => (0..=act.len()).any(|skip| lines(rest, &act[skip..])),
            Some((e, rest)) => !act.is_empty() && line_matches(e, act[0]) && lines(rest, &act[1..]),
        }
    }
    lines(&exp, &act)
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `signal` to every process of group `pgid`.
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops what the blocks left running: SIGTERM, up to 20 s, then SIGKILL.
struct Groups(Vec<u32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for &g in &self.0 {
            kill_group(g, "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &g in &self.0 {
            kill_group(g, "KILL");
        }
    }
}

fn run_doc(relative: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("docs/operations").join(relative);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let blocks = blocks(&doc);

    // Every llmcm command named anywhere in a shell block exists.
    let commands: Vec<String> = blocks
        .iter()
        .filter(|b| b.shell)
        .flat_map(|b| cli_lines::commands_in(&b.text))
        .collect();
    cli_lines::assert_commands_parse(relative, &commands);
    // And every inline `llmcm ...` in the prose (tables, sentences) without optional parts.
    let inline: Vec<String> = inline_commands(&doc)
        .into_iter()
        .filter(|c| !c.contains(['[', '|', '<']) && !c.contains("..."))
        .collect();
    cli_lines::assert_mentions_parse(relative, &inline);

    let runnable: Vec<&Block> = blocks.iter().filter(|b| b.runnable).collect();
    if runnable.is_empty() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_llmcm"));

    // An admin token, made by the real `llmcm token new`.
    let out = Command::new(&bin)
        .args(["token", "new", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("# ").filter(|t| t.starts_with("llmcm_")))
        .expect("a token line")
        .to_owned();
    let token_toml: String = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let repo = work.join("backups");
    let data = work.join("data");
    let config = format!(
        "log_level = \"warn\"\n[backup]\npoll = \"1s\"\n[[backup.repositories]]\nname = \"main\"\nurl = \"{}\"\n{token_toml}",
        repo.display()
    );
    let own_server = doc.contains("<!-- runbook: own-server -->");
    let (server, base, config_path) = if own_server {
        let listen = format!("127.0.0.1:{}", free_port());
        let config_path = work.join("llmcm.toml");
        std::fs::write(&config_path, &config).unwrap();
        (None, format!("http://{listen}"), config_path)
    } else {
        let s = server::Server::start(&data, &config, &[]);
        let (base, config_path) = (s.base.clone(), s.config_path());
        (Some(s), base, config_path)
    };
    let listen = base.trim_start_matches("http://").to_owned();
    let pid = server
        .as_ref()
        .map(|s| s.pid().to_string())
        .unwrap_or_default();
    let path_var = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut groups = Groups(Vec::new());
    for block in runnable {
        let mut child = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block.text])
            .current_dir(work)
            .env("PATH", &path_var)
            .env("LLMCM_SERVER", &base)
            .env("LLMCM_LISTEN", &listen)
            .env("LLMCM_TOKEN", &token)
            .env("LLMCM_CONFIG", &config_path)
            .env("LLMCM_DATA_DIR", &data)
            .env("LLMCM_REPO", &repo)
            .env("LLMCM_PID", &pid)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        groups.0.push(child.id());
        // Read both pipes on threads so a chatty block cannot fill one and stall.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
            s
        });
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                kill_group(child.id(), "KILL");
                panic!(
                    "{relative}:{}: the block ran longer than {BLOCK_TIMEOUT:?}:\n{}",
                    block.line, block.text
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out_reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        let context = || {
            format!(
                "{relative}:{}:\n--- block\n{}--- stdout\n{stdout}--- stderr\n{stderr}",
                block.line, block.text
            )
        };
        assert_eq!(
            status.code(),
            Some(block.exit),
            "exit status {status} (expected {}) of {}",
            block.exit,
            context()
        );
        if let Some(expected) = &block.expected {
            assert!(
                matches(expected, &stdout),
                "the output differs from the expected block\n--- expected\n{expected}{}",
                context()
            );
        }
    }
    drop(groups);
    if let Some(s) = server {
        let status = s.stop();
        assert!(
            status.success(),
            "{relative}: the scratch server exited {status}"
        );
    }
}

#[test]
fn matching_rules() {
    assert!(matches("a\n...\nd\n", "a\nb\nc\nd\n"));
    assert!(matches("a\n...\n", "a\n"));
    assert!(!matches("a\nd\n", "a\nb\nd\n"));
    assert!(matches(
        "revision [..] at [..]Z\n",
        "revision 3 at 2026-11-27T07:42:42Z\n"
    ));
    assert!(!matches("revision [..] at\n", "revision 3 on\n"));
}

#[test]
fn command_finding() {
    let found = |text: &str| cli_lines::commands_in(text);
    assert!(found("sudo install -m 0755 target/release/llmcm /usr/local/bin/llmcm").is_empty());
    assert!(found("journalctl -u llmcm -o cat -n 20").is_empty());
    assert!(found("# llmcm put in a comment").is_empty());
    assert_eq!(
        found("ExecStart=/usr/local/bin/llmcm serve --config x"),
        ["llmcm serve --config x"]
    );
    assert_eq!(found("a && llmcm get k > out"), ["llmcm get k > out"]);
    assert_eq!(
        found("id=\"$(llmcm backup list --json | jq)\""),
        ["llmcm backup list --json | jq)\""]
    );
    assert_eq!(
        found("podman exec llmcm sh -c 'T=x llmcm doctor'"),
        ["llmcm doctor'"]
    );
    // The words that reach the parser.
    cli_lines::assert_commands_parse(
        "command_finding",
        &found(
            "x=\"$(llmcm --json backup list --repo r | jq .)\"; sh -c 'T=1 llmcm doctor'\nllmcm put k '{\"a\": 1}' --reason \"a b\" 2> err &",
        ),
    );
    let bad = std::panic::catch_unwind(|| {
        cli_lines::assert_commands_parse("command_finding", &found("llmcm backup verify --bogus"))
    });
    assert!(bad.is_err(), "an unknown flag fails");
}

/// Every document of docs/operations has its test below.
#[test]
fn every_document_is_tested() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations");
    let mut found = Vec::new();
    for dir in [root.clone(), root.join("runbooks")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                found.push(p.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    let mut tested = DOCS.to_vec();
    tested.sort();
    assert_eq!(found, tested);
}

const DOCS: &[&str] = &[
    "README.md",
    "runbooks/startup-shutdown.md",
    "runbooks/health-checks.md",
    "runbooks/performance-troubleshooting.md",
    "runbooks/common-issues.md",
    "monitoring.md",
    "incident-response.md",
    "disaster-recovery.md",
    "backup-restore.md",
];

#[test]
fn readme() {
    run_doc("README.md");
}

#[test]
fn startup_shutdown() {
    run_doc("runbooks/startup-shutdown.md");
}

#[test]
fn health_checks() {
    run_doc("runbooks/health-checks.md");
}

#[test]
fn performance_troubleshooting() {
    run_doc("runbooks/performance-troubleshooting.md");
}

#[test]
fn common_issues() {
    run_doc("runbooks/common-issues.md");
}

#[test]
fn monitoring() {
    run_doc("monitoring.md");
}

#[test]
fn incident_response() {
    run_doc("incident-response.md");
}

#[test]
fn disaster_recovery() {
    run_doc("disaster-recovery.md");
}

#[test]
fn backup_restore() {
    run_doc("backup-restore.md");
}
