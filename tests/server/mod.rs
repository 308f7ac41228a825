//! Starting the real `llmcm` binary as a server on a free loopback port, for integration tests.
//! The server is stopped (SIGTERM, then SIGKILL after a bound) when the handle drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
}

impl Server {
    /// Starts `llmcm serve` on `data_dir` with `config_toml` (written next to it) and extra args.
    pub fn start(data_dir: &Path, config_toml: &str, args: &[&str]) -> Server {
        Server::start_under(&[], data_dir, config_toml, args)
    }

    /// `start`, with the binary run by `wrapper` (e.g. `["fiu-run", "-x"]`).
    pub fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        config_toml: &str,
        args: &[&str],
    ) -> Server {
        Server::start_full(wrapper, &[], data_dir, config_toml, args)
    }

    /// `start` with extra environment variables (e.g. `LLMCM_CRASH_AT`).
    pub fn start_with_env(
        env: &[(&str, &str)],
        data_dir: &Path,
        config_toml: &str,
        args: &[&str],
    ) -> Server {
        Server::start_full(&[], env, data_dir, config_toml, args)
    }

    fn start_full(
        wrapper: &[&str],
        env: &[(&str, &str)],
        data_dir: &Path,
        config_toml: &str,
        args: &[&str],
    ) -> Server {
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_llmcm"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_llmcm")),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(
                args.windows(2)
                    .find(|w| w[0] == "--listen")
                    .map_or("127.0.0.1:0", |w| w[1]),
            )
            .args(without_listen(args))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start llmcm serve");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Then `ready` once the store is open (before that, everything but liveness is 503).
        let mut ready = String::new();
        reader.read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "the server did not open its store");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child: Some(child),
            base,
            dir: data_dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (e.g. "HUP") to the server.
    pub fn signal(&self, signal: &str) {
        unsafe_kill(self.pid(), signal);
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits up to `timeout` for the server to exit by itself; its status, or `None` (then it is
    /// still running and will be stopped on drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The config file the server was started with (rewrite it, then `signal("HUP")`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.with_extension("toml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs the `llmcm` command line against this server (no token).
    pub fn llmcm(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_llmcm"))
            .args(args)
            .env("LLMCM_SERVER", &self.base)
            .env_remove("LLMCM_TOKEN")
            .output()
            .unwrap()
    }

    /// `GET /health`.
    pub fn health(&self) -> serde_json::Value {
        client()
            .get(self.url("/health"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The value of the sample `name` (with its labels, e.g. `x{repo="main"}`) in `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate().expect("server was running")
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id(), "TERM");
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `args` without a `--listen ADDR` pair (given to `--listen` once, by `start_full`).
fn without_listen<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut skip = false;
    for &a in args {
        if skip {
            skip = false;
        } else if a == "--listen" {
            skip = true;
        } else {
            out.push(a);
        }
    }
    out
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: serde_json::Value,
}

/// Reads `count` Server-Sent Events (or fewer if the stream ends) from a watch request.
pub fn read_events(url: &str, last_event_id: Option<u64>, count: usize) -> Vec<SseEvent> {
    let mut req = client().get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let mut events = SseReader::open(req);
    let mut out = Vec::new();
    while out.len() < count {
        match events.next_event() {
            Some(event) => out.push(event),
            None => break,
        }
    }
    out
}

/// A watch stream, read one event at a time.
pub struct SseReader {
    reader: BufReader<reqwest::blocking::Response>,
}

impl SseReader {
    /// Sends `req` (a watch request) and expects 200.
    pub fn open(req: reqwest::blocking::RequestBuilder) -> SseReader {
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.headers());
        SseReader {
            reader: BufReader::new(resp),
        }
    }

    /// The next event; `None` once the stream has ended.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !event.is_empty() {
                    return Some(SseEvent {
                        event,
                        id,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
            } else if let Some(v) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(v);
            }
        }
    }
}

/// A fresh token with `role` and `prefixes`, and its `[[auth.tokens]]` entry.
pub fn token(name: &str, role: llmcm::config::Role, prefixes: &[&str]) -> (String, String) {
    let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
    llmcm::token::new_token(name, role, &prefixes).unwrap()
}

/// Anonymous memory of process `pid` (RssAnon), in bytes: the server's own allocations,
/// without the mapped segments.
pub fn rss_anon_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
