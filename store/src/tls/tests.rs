use std::path::Path;

use super::*;

/// A CA and a leaf it signed for 127.0.0.1/localhost, written as PEM files
/// into `dir` under `name`: (ca, cert, key) paths.
fn write_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("leaf");
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

#[test]
fn configs_build_from_pem_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = write_pki(dir.path(), "a");
    let files = TlsFiles {
        cert,
        key,
        ca: Some(ca),
    };
    server_config(&files, CLIENT_ALPN).expect("server config");
    client_config(&files).expect("client config");
    assert!(PeerTls::mutual(files).expect("peer tls").enabled());
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = write_pki(dir.path(), "a");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").expect("write");
    let err = load_certs(&garbage).expect_err("no certificate");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    // A key that does not belong to the certificate.
    let (_, _, other_key) = write_pki(dir.path(), "b");
    let files = TlsFiles {
        cert,
        key: other_key,
        ca: Some(ca),
    };
    assert!(server_config(&files, CLIENT_ALPN).is_err());
    assert!(load_key(&dir.path().join("missing.pem")).is_err());
    assert!(load_key(&key).is_ok());
}

#[test]
fn server_names_come_from_the_dialled_address() {
    assert!(server_name("127.0.0.1:2380").is_ok());
    assert!(server_name("[::1]:2380").is_ok());
    assert!(server_name("node-1.example:2380").is_ok());
    assert!(server_name("bad name:1").is_err());
}

#[test]
fn a_bad_new_file_keeps_the_config_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, cert, key) = write_pki(dir.path(), "a");
    let files = TlsFiles {
        cert: cert.clone(),
        key,
        ca: None,
    };
    let build_files = files.clone();
    let live = Live::new("test", files.paths(), move || {
        server_config(&build_files, CLIENT_ALPN)
    })
    .expect("live");
    let before = live.current();
    // Unchanged files: nothing is rebuilt.
    live.refresh(false);
    assert!(Arc::ptr_eq(&before, &live.current()));
    // A broken certificate: logged, the old config kept.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    live.refresh(true);
    assert!(Arc::ptr_eq(&before, &live.current()));
    // A good pair again: the next connection gets the new config.
    let (_, new_cert, new_key) = write_pki(dir.path(), "c");
    std::fs::copy(&new_cert, &files.cert).expect("copy");
    std::fs::copy(&new_key, &files.key).expect("copy");
    live.refresh(false);
    assert!(!Arc::ptr_eq(&before, &live.current()));
}
