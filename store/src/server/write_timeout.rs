//! [`WriteTimeout`]: a client connection whose writes make no progress for
//! too long fails, so that whatever its response holds is released.
//!
//! A client that keeps its connection open and stops reading fills its
//! socket buffer; hyper then stops polling the response body, and the
//! chunks it already took (up to a streamed range read's response buffer,
//! counted against the node's range budget) stay queued until the
//! connection closes. Enough such clients would hold the whole budget.
//!
//! The timer runs only while a write is pending: it starts when the socket
//! refuses bytes and is cleared by any write or flush that goes through. A
//! connection with nothing to send (an idle keep-alive connection, a watch
//! with no changes) never has a pending write, so it is never cut here;
//! a watch whose client stopped draining it is.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail with [`io::ErrorKind::TimedOut`] once
/// they made no progress for `timeout`.
#[derive(Debug)]
pub(crate) struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write (or flush, or shutdown) is refused; cleared when
    /// one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What to answer for a write-side poll of the inner stream: progress
    /// disarms the timer, a refusal arms it (once) and fails when it fired.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client took nothing for {timeout:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that never reads: the writer fails once the pipe is full for
    /// the timeout. Idle for several timeouts first, it is not failed.
    #[tokio::test]
    async fn a_write_that_cannot_progress_fails_after_the_timeout() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(a, Duration::from_millis(100));
        // Idle, nothing pending: nothing fails.
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.write_all(&[1u8; 1024]).await.expect("fits the pipe");
        // Now the pipe is full and nobody reads.
        let stuck = w.write_all(&[2u8; 10]).await;
        let e = stuck.expect_err("no progress for the timeout");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // A reader that drains lets the writer through again.
        let mut drained = vec![0u8; 1024];
        b.read_exact(&mut drained).await.expect("read");
        w.write_all(&[3u8; 10]).await.expect("progress again");
    }

    /// A slow reader that keeps taking bytes is never cut, however long the
    /// whole transfer takes.
    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(a, Duration::from_secs(2));
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = [0u8; 64];
            while got < 64 * 40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += b.read(&mut buf).await.expect("read");
            }
            got
        });
        // 40 pipe-fulls at one per 100 ms: twice the timeout in all.
        for _ in 0..40 {
            w.write_all(&[7u8; 64]).await.expect("steady progress");
        }
        assert_eq!(reader.await.expect("reader"), 64 * 40);
    }
}
