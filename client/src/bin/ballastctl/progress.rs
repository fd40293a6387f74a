//! Feedback for slow operations on stderr.
//!
//! - A spinner once an operation has run for [`SPINNER_DELAY`], only when
//!   stderr is a terminal (scripts and pipes see nothing); quick operations
//!   never draw anything.
//! - [`Transfer`], for downloads: a byte bar on a terminal, plain progress
//!   lines otherwise.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How long an operation runs before a spinner appears.
pub const SPINNER_DELAY: Duration = Duration::from_secs(1);
/// Redraw interval of the spinner.
const TICK: Duration = Duration::from_millis(100);

/// Awaits `work`; if it takes longer than [`SPINNER_DELAY`] and stderr is a
/// terminal, shows `message` with a spinner and the elapsed time until it ends.
pub async fn with_spinner<F: Future>(message: impl Into<String>, work: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let mut work = std::pin::pin!(work);
    tokio::select! {
        out = &mut work => return out,
        () = tokio::time::sleep(SPINNER_DELAY) => {}
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.into());
    bar.enable_steady_tick(TICK);
    let out = work.await;
    bar.finish_and_clear();
    out
}

/// How often a line of progress is printed when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Progress of a download: a byte bar on a terminal; otherwise plain lines
/// on stderr, at most one per [`PLAIN_INTERVAL`], and one at the end.
pub struct Transfer {
    what: String,
    bar: Option<ProgressBar>,
    last_line: Option<std::time::Instant>,
    received: u64,
    total: Option<u64>,
}

impl Transfer {
    /// Progress of `what` (e.g. `snapshot from node`), nothing drawn yet.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            bar: None,
            last_line: None,
            received: 0,
            total: None,
        }
    }

    /// `received` of `total` bytes so far.
    pub fn update(&mut self, received: u64, total: Option<u64>) {
        self.received = received;
        self.total = total;
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(total.unwrap_or(0));
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(self.what.clone());
                bar
            });
            bar.set_position(received);
            return;
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL);
        if due {
            self.last_line = Some(std::time::Instant::now());
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {} of {} bytes ({}%)",
                self.what,
                self.received,
                total,
                self.received * 100 / total
            ),
            _ => format!("{}: {} bytes", self.what, self.received),
        }
    }

    /// Clears the bar, or prints the last plain line.
    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.received > 0 => eprintln!("{}", self.line()),
            None => {}
        }
    }
}
