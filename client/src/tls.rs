//! [`TlsOptions`]: the CA that `https://` endpoints must chain to, and an
//! optional client certificate for nodes that require one (mutual TLS).
//!
//! The client is built with rustls and no built-in roots: an `https://`
//! endpoint is only trusted through the CA given here, and a client without
//! one is refused when it is built, not on its first call.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A PEM source: a file read when the client is built, or bytes.
#[derive(Debug, Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn read(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::Bytes(b) => Ok(b.clone()),
            Pem::File(path) => std::fs::read(path)
                .map_err(|e| Error::InvalidArgument(format!("{what} {}: {e}", path.display()))),
        }
    }
}

/// TLS settings of a [`Client`](crate::Client) or [`Replica`](crate::Replica).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
}

impl TlsOptions {
    /// No CA and no client certificate: `http://` endpoints only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust servers whose certificate chains to the CA certificates in this
    /// PEM file (read when the client is built).
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca = Some(Pem::File(path.as_ref().to_path_buf()));
        self
    }

    /// Trust servers whose certificate chains to these PEM CA certificates.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Present this certificate chain and key (PEM files) to nodes that
    /// require client certificates.
    pub fn identity_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.identity = Some((
            Pem::File(cert.as_ref().to_path_buf()),
            Pem::File(key.as_ref().to_path_buf()),
        ));
        self
    }

    /// Present this certificate chain and key (PEM) to nodes that require
    /// client certificates.
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// Whether a CA is set (needed for `https://` endpoints).
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// Applies the settings to a reqwest builder: rustls, TLS 1.2 at least,
    /// only the given CA as root.
    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let mut builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .min_tls_version(reqwest::tls::Version::TLS_1_2);
        if let Some(ca) = &self.ca {
            let pem = ca.read("CA file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::InvalidArgument(format!("CA: {e}")))?;
            if certs.is_empty() {
                return Err(Error::InvalidArgument(
                    "CA: no PEM certificate found".to_owned(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = cert.read("client certificate")?;
            pem.push(b'\n');
            pem.extend(key.read("client key")?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::InvalidArgument(format!("client certificate and key: {e}")))?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}
