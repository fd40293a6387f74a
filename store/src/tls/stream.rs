//! A peer connection, plain or TLS, as one type for the framing above it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A peer connection: plain TCP, or TLS as the dialler or the listener.
/// (The TLS states are boxed: they are large, and plain stays small.)
pub enum PeerStream {
    /// Plain TCP (peer TLS off).
    Plain(TcpStream),
    /// TLS, this node dialled.
    Dialed(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS, this node accepted.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerStream::Plain(_) => "PeerStream::Plain",
            PeerStream::Dialed(_) => "PeerStream::Dialed",
            PeerStream::Accepted(_) => "PeerStream::Accepted",
        })
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Dialed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            PeerStream::Accepted(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Dialed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            PeerStream::Accepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Dialed(s) => Pin::new(s.as_mut()).poll_flush(cx),
            PeerStream::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Dialed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            PeerStream::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerStream::Dialed(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            PeerStream::Accepted(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Plain(s) => s.is_write_vectored(),
            PeerStream::Dialed(s) => s.is_write_vectored(),
            PeerStream::Accepted(s) => s.is_write_vectored(),
        }
    }
}
