//! Runs against a cluster that speaks TLS (`--tls`): a CA made for the run
//! signs one certificate for 127.0.0.1 that every node serves on its client
//! port and presents to its peers (mutual TLS between the nodes, checked
//! against that CA), and every client of the run (workload, nemeses, checks)
//! trusts that CA and reaches the nodes over `https://`.
//!
//! The setting is process-wide, like the run's token (`auth.rs`): it is set
//! once before the cluster starts and read by every client builder.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

/// The run's certificate files.
#[derive(Debug, Clone)]
pub struct RunCerts {
    /// The CA certificate, PEM.
    pub ca: PathBuf,
    /// The nodes' certificate (127.0.0.1 and localhost), PEM.
    pub node_cert: PathBuf,
    /// Its private key, PEM.
    pub node_key: PathBuf,
}

static CERTS: OnceLock<RunCerts> = OnceLock::new();

/// Makes a CA and a node certificate under `dir` and turns TLS on for the
/// rest of the process.
pub fn enable(dir: &Path) -> anyhow::Result<&'static RunCerts> {
    std::fs::create_dir_all(dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "jepsen-lite run CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "jepsen-lite node");
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let certs = RunCerts {
        ca: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
    };
    std::fs::write(&certs.ca, ca.pem()).context("writing the CA")?;
    std::fs::write(&certs.node_cert, cert.pem())?;
    std::fs::write(&certs.node_key, key.serialize_pem())?;
    restrict(&certs.node_key)?;
    let _ = CERTS.set(certs);
    CERTS
        .get()
        .ok_or_else(|| anyhow::anyhow!("TLS settings not stored"))
}

#[cfg(unix)]
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The run's certificates, when TLS is on.
pub fn certs() -> Option<&'static RunCerts> {
    CERTS.get()
}

/// `https://ADDR` with TLS on, else `http://ADDR`.
pub fn url(addr: impl std::fmt::Display) -> String {
    match certs() {
        Some(_) => format!("https://{addr}"),
        None => format!("http://{addr}"),
    }
}

/// The ballastd flags of TLS on both ports, mutual TLS between peers.
pub fn node_args() -> Vec<String> {
    let Some(c) = certs() else {
        return Vec::new();
    };
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    vec![
        format!("--tls-cert={}", path(&c.node_cert)),
        format!("--tls-key={}", path(&c.node_key)),
        format!("--peer-tls-cert={}", path(&c.node_cert)),
        format!("--peer-tls-key={}", path(&c.node_key)),
        format!("--peer-tls-ca={}", path(&c.ca)),
    ]
}

/// `builder` trusting only the run's CA when TLS is on (unchanged otherwise).
pub fn apply(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let Some(c) = certs() else {
        return builder;
    };
    let builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
    match std::fs::read(&c.ca)
        .ok()
        .and_then(|pem| reqwest::Certificate::from_pem(&pem).ok())
    {
        Some(ca) => builder.add_root_certificate(ca),
        // No CA: every https request fails, which the run reports.
        None => builder,
    }
}

/// The client crate's TLS options for the run (the default with TLS off).
pub fn client_options() -> ballast_client::TlsOptions {
    match certs() {
        Some(c) => ballast_client::TlsOptions::new().ca_file(&c.ca),
        None => ballast_client::TlsOptions::default(),
    }
}
