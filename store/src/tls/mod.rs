//! TLS on the client and peer listeners and on the peer dialer (rustls with
//! the ring provider; TLS 1.3, 1.2 allowed).
//!
//! # Layout
//! - this file: loading PEM files and building rustls configurations.
//! - `live`: a configuration that is rebuilt from its files on SIGHUP or
//!   when they change ([`Live`]), and the task that watches them.
//! - `stream`: [`PeerStream`], a peer connection with or without TLS.
//! - `dev`: a throwaway CA and certificates for `ballastd dev --tls`.
//!
//! The peer port is mutual TLS when configured: each side presents its node
//! certificate and checks the other's against the cluster CA, so a node
//! whose certificate that CA did not sign cannot open a connection, let
//! alone send a Raft RPC.
//!
//! Imports nothing else from the crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

mod dev;
mod live;
mod stream;

pub use dev::{dev_certs, DevCerts};

pub use live::{hangup_signal, run_reloader, Live, Reload};
pub use stream::PeerStream;

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the
    /// certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// TLS 1.3 preferred, 1.2 allowed.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e.to_string()))
}

/// The CA certificates in the PEM file at `path`, as trust roots.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The files of one TLS identity: a certificate chain, its key, and
/// optionally a CA the other side must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) that the other side's certificate must chain to.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.ca.clone());
        paths
    }
}

/// A listener's configuration: present `files.cert`; when `files.ca` is
/// set, require a client certificate that chains to it.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A dialler's configuration: trust only `files.ca` and present
/// `files.cert` as the client certificate.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let ca = files
        .ca
        .as_ref()
        .ok_or_else(|| TlsError::Config("a TLS client needs a CA file".into()))?;
    let roots = load_roots(ca)?;
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))
}

/// The protocol the client listener offers over TLS.
pub const CLIENT_ALPN: &[&[u8]] = &[b"http/1.1"];

/// The peer protocol's ALPN name: a peer must ask for it, so that an HTTP
/// client pointed at the peer port fails the handshake plainly.
pub const PEER_ALPN: &[u8] = b"ballast-peer/1";

/// Mutual TLS on the peer port and the peer dialer, or plain TCP when
/// `None` inside. Cheap to clone.
#[derive(Clone, Default)]
pub struct PeerTls {
    inner: Option<Arc<PeerTlsInner>>,
}

struct PeerTlsInner {
    accept: Arc<Live<ServerConfig>>,
    dial: Arc<Live<ClientConfig>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl PeerTls {
    /// Plain TCP both ways.
    pub fn plain() -> PeerTls {
        PeerTls::default()
    }

    /// Mutual TLS from `files` (which must name the CA). Fails when a file
    /// is unusable.
    pub fn mutual(files: TlsFiles) -> Result<PeerTls, TlsError> {
        if files.ca.is_none() {
            return Err(TlsError::Config("peer TLS needs the cluster CA".into()));
        }
        let accept_files = files.clone();
        let accept = Live::new("peer listener", files.paths(), move || {
            server_config(&accept_files, &[PEER_ALPN])
        })?;
        let dial_files = files.clone();
        let dial = Live::new("peer dialer", files.paths(), move || {
            let mut config = client_config(&dial_files)?;
            config.alpn_protocols = vec![PEER_ALPN.to_vec()];
            Ok(config)
        })?;
        Ok(PeerTls {
            inner: Some(Arc::new(PeerTlsInner {
                accept: Arc::new(accept),
                dial: Arc::new(dial),
            })),
        })
    }

    /// Whether peer traffic is TLS.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The reloadable parts, for the reloader.
    pub fn reloadables(&self) -> Vec<Arc<dyn Reload>> {
        match &self.inner {
            Some(inner) => vec![inner.accept.clone(), inner.dial.clone()],
            None => Vec::new(),
        }
    }

    /// The listener's side: the TLS handshake (which checks the dialler's
    /// certificate) on an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<PeerStream> {
        let _ = stream.set_nodelay(true);
        match &self.inner {
            None => Ok(PeerStream::Plain(stream)),
            Some(inner) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(inner.accept.current());
                let tls = acceptor.accept(stream).await?;
                Ok(PeerStream::Accepted(Box::new(tls)))
            }
        }
    }

    /// The dialler's side: the TLS handshake with the peer at `addr`
    /// (`host:port`; the host must be in the peer's certificate).
    pub async fn dial(&self, stream: TcpStream, addr: &str) -> std::io::Result<PeerStream> {
        let _ = stream.set_nodelay(true);
        match &self.inner {
            None => Ok(PeerStream::Plain(stream)),
            Some(inner) => {
                let name = server_name(addr)?;
                let connector = tokio_rustls::TlsConnector::from(inner.dial.current());
                let tls = connector.connect(name, stream).await?;
                Ok(PeerStream::Dialed(Box::new(tls)))
            }
        }
    }
}

/// The name to verify for `addr` (`host:port`, `[v6]:port`): an IP
/// address or a DNS name.
pub fn server_name(addr: &str) -> std::io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr}: not a TLS server name: {e}"),
        )
    })
}

#[cfg(test)]
mod tests;
