//! Test certificates: a CA per test, and certificates it signs for
//! 127.0.0.1 and localhost, written as PEM files into a temp dir (nothing is
//! committed to the repository).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A certificate authority whose certificates the tests hand to nodes and
/// clients.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    /// The CA certificate, PEM.
    pub ca_file: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<TestCa> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).context("writing the CA")?;
        Ok(TestCa {
            cert,
            key,
            ca_file,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        })
    }

    /// A certificate for 127.0.0.1 and localhost (server and client use),
    /// written to `<ca>-<who>.pem` and `<ca>-<who>-key.pem`.
    pub fn issue(&self, who: &str) -> Result<Issued> {
        let issued = Issued {
            cert: self.dir.join(format!("{}-{who}.pem", self.name)),
            key: self.dir.join(format!("{}-{who}-key.pem", self.name)),
        };
        self.issue_into(who, &issued)?;
        Ok(issued)
    }

    /// A new certificate for `who` written over `into`'s files (each
    /// replaced by a rename, as a deployment tool would), as when it is
    /// rotated. Returns the new certificate in DER.
    pub fn issue_into(&self, who: &str, into: &Issued) -> Result<Vec<u8>> {
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, who.to_owned());
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        replace(&into.key, key.serialize_pem().as_bytes())?;
        replace(&into.cert, cert.pem().as_bytes())?;
        Ok(cert.der().to_vec())
    }
}

/// Writes `path` whole at once: a temp file, then a rename.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
