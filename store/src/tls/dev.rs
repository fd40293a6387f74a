//! Certificates for trying TLS on one machine (`ballastd dev --tls DIR`): a
//! throwaway CA, one certificate for the nodes (127.0.0.1 and localhost, as
//! server and as peer client) and one client certificate. Never for
//! production: the CA key sits next to the certificates.

use std::path::{Path, PathBuf};

use super::TlsError;

/// The files of a dev PKI.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate: `--cacert` / `--peer-tls-ca` / `--tls-client-ca`.
    pub ca: PathBuf,
    /// The nodes' certificate (both ports).
    pub node_cert: PathBuf,
    /// Its key.
    pub node_key: PathBuf,
    /// A client certificate (`--cert`).
    pub client_cert: PathBuf,
    /// Its key (`--key`).
    pub client_key: PathBuf,
}

fn gen_error(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("generating a dev certificate: {e}"))
}

/// Writes `bytes` to `path`, readable by the owner only when `secret`.
fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let fail = |e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(fail)
}

/// The dev PKI in `dir`: reused when `dir/ca.pem` exists, else created.
pub fn dev_certs(dir: &Path) -> Result<DevCerts, TlsError> {
    let certs = DevCerts {
        ca: dir.join("ca.pem"),
        node_cert: dir.join("node.pem"),
        node_key: dir.join("node-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    if certs.ca.exists() {
        return Ok(certs);
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let ca_key = rcgen::KeyPair::generate().map_err(gen_error)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_error)?;
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ballast dev CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).map_err(gen_error)?;
    let issue = |cn: &str, cert_path: &Path, key_path: &Path| -> Result<(), TlsError> {
        let key = rcgen::KeyPair::generate().map_err(gen_error)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(gen_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(gen_error)?;
        write(key_path, key.serialize_pem().as_bytes(), true)?;
        write(cert_path, cert.pem().as_bytes(), false)
    };
    issue("ballast dev node", &certs.node_cert, &certs.node_key)?;
    issue("ballast dev client", &certs.client_cert, &certs.client_key)?;
    write(
        &dir.join("ca-key.pem"),
        ca_key.serialize_pem().as_bytes(),
        true,
    )?;
    // The CA last: its presence says the directory is complete.
    write(&certs.ca, ca.pem().as_bytes(), false)?;
    Ok(certs)
}
