//! Reading values and documents from files and stdin, bounded so that a wrong
//! path (`/dev/zero`, a huge log) fails fast instead of filling memory.

use std::io::IsTerminal as _;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::exit::CliError;
use crate::progress::with_spinner;

/// The most bytes read for one value or document: the largest value any node
/// can be configured to accept (`--max-value-bytes` is at most 8 MiB) plus the
/// 64 KiB a request body may add.
pub const MAX_INPUT_BYTES: u64 = 8 * 1024 * 1024 + 64 * 1024;

/// Where input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A file.
    File(&'a Path),
    /// Standard input.
    Stdin,
}

/// Whether stdin is connected to a terminal (then it is never read implicitly).
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads all of `source`, at most [`MAX_INPUT_BYTES`].
pub async fn read_all(source: Source<'_>) -> Result<Vec<u8>, CliError> {
    match source {
        Source::File(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", path.display())))?;
            let what = format!("reading {}", path.display());
            with_spinner(what.clone(), read_bounded(file, &what)).await
        }
        Source::Stdin => {
            with_spinner("reading stdin", read_bounded(tokio::io::stdin(), "stdin")).await
        }
    }
}

async fn read_bounded(reader: impl AsyncRead + Unpin, what: &str) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| CliError::Usage(format!("{what}: {e}")))?;
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::Usage(format!(
            "{what}: more than {MAX_INPUT_BYTES} bytes, larger than any node accepts"
        )));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_bounded() {
        let small: &[u8] = b"hello";
        assert_eq!(read_bounded(small, "t").await, Ok(b"hello".to_vec()));
        let big = vec![0u8; usize::try_from(MAX_INPUT_BYTES).unwrap_or(0) + 1];
        let err = read_bounded(big.as_slice(), "t").await;
        assert!(matches!(err, Err(CliError::Usage(_))), "{err:?}");
    }

    #[tokio::test]
    async fn missing_file_is_a_usage_error() {
        let err = read_all(Source::File(Path::new("/nonexistent/ballast-value"))).await;
        assert!(matches!(err, Err(CliError::Usage(_))), "{err:?}");
    }
}
