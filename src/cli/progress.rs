//! A progress line for long commands on a terminal: the label, a bar with the share done when
//! the command can tell (`Ticker::with_progress`), and the elapsed time, redrawn on stderr every
//! 200 ms until dropped (then cleared). Nothing at all when stderr is not a terminal, so pipes
//! and logs stay clean.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Asked at every frame for (done, total) bytes, if known yet.
type Poll = Box<dyn FnMut() -> Option<(u64, u64)> + Send>;

const BAR_WIDTH: usize = 24;

/// `[#########...............]  37%  236/634 MB`
fn bar(done: u64, total: u64) -> String {
    let share = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (share * BAR_WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}% {}/{} MB",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        share * 100.0,
        done / 1_000_000,
        total / 1_000_000
    )
}

impl Ticker {
    pub fn start(label: &str) -> Ticker {
        Ticker::spawn(label, None)
    }

    /// `start`, with a bar of the share done as `poll` reports it.
    pub fn with_progress(
        label: &str,
        poll: impl FnMut() -> Option<(u64, u64)> + Send + 'static,
    ) -> Ticker {
        Ticker::spawn(label, Some(Box::new(poll)))
    }

    fn spawn(label: &str, mut poll: Option<Poll>) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Ticker { stop, thread: None };
        }
        let (flag, label) = (stop.clone(), label.to_owned());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let frames = ['|', '/', '-', '\\'];
            let mut i = 0;
            let mut shown = String::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(poll) = poll.as_mut()
                    && let Some((done, total)) = poll()
                    && total > 0
                {
                    shown = format!(" {}", bar(done, total));
                }
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2K{} {label}{shown} ({:.1} s)",
                    frames[i % frames.len()],
                    started.elapsed().as_secs_f64()
                );
                let _ = err.flush();
                drop(err);
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        });
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bar_shows_the_share_done() {
        assert_eq!(
            super::bar(317_000_000, 634_000_000),
            "[############............]  50% 317/634 MB"
        );
        assert_eq!(
            super::bar(0, 0),
            format!("[{}] 100% 0/0 MB", "#".repeat(24))
        );
    }
}
