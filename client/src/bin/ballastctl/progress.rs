//! Feedback for slow operations: a spinner on stderr once an operation has run
//! for [`SPINNER_DELAY`], only when stderr is a terminal (scripts and pipes see
//! nothing). Quick operations never draw anything.

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
