//! The backup envelope check: a valid file in any chunking, and every
//! corrupted byte, truncation and extension refused; the download against
//! in-process servers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use xxhash_rust::xxh3::xxh3_64;

use super::*;

/// A backup as a node writes it, around a snapshot file of `payload`.
fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut inner = INNER_MAGIC.to_vec();
    inner.extend_from_slice(payload);
    let inner_sum = xxh3_64(&inner);
    inner.extend_from_slice(&inner_sum.to_le_bytes());
    let header = json!({
        "format": 1,
        "cluster_id": format!("{:032x}", 0xabcu128),
        "node_id": 2,
        "revision": 40,
        "compact_revision": 3,
        "key_count": 17,
        "state_hash": format!("{:032x}", 0x1234u128),
        "snapshot_bytes": inner.len(),
        "created_unix_secs": 1_700_000_000u64,
    })
    .to_string();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&inner);
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn verify(bytes: &[u8], chunk: usize) -> Result<SnapshotInfo> {
    let mut v = SnapshotVerifier::new();
    for piece in bytes.chunks(chunk.max(1)) {
        v.feed(piece)?;
    }
    v.finish()
}

#[test]
fn a_valid_backup_verifies_in_any_chunking() {
    let bytes = envelope(b"records records records");
    for chunk in [1, 3, 7, 64, bytes.len()] {
        let info = verify(&bytes, chunk).expect("valid");
        assert_eq!(info.revision, 40);
        assert_eq!(info.compact_revision, 3);
        assert_eq!(info.key_count, 17);
        assert_eq!(info.node_id, 2);
        assert_eq!(info.size, bytes.len() as u64);
        let trailer: [u8; 8] = bytes[bytes.len() - 8..].try_into().expect("8 bytes");
        assert_eq!(
            info.checksum,
            format!("{:016x}", u64::from_le_bytes(trailer))
        );
    }
}

#[test]
fn every_corrupt_byte_is_refused() {
    let bytes = envelope(b"some records");
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            let result = verify(&bad, 5);
            assert!(
                matches!(result, Err(Error::Snapshot(_))),
                "byte {i} bit {bit:#x}: {result:?}"
            );
        }
    }
}

#[test]
fn truncated_or_extended_files_are_refused() {
    let bytes = envelope(b"some records");
    for len in 0..bytes.len() {
        let result = verify(&bytes[..len], 4);
        let Err(Error::Snapshot(message)) = result else {
            panic!("{len} bytes: {result:?}");
        };
        assert!(
            message.contains("truncated") || message.contains("magic"),
            "{len}: {message}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(verify(&longer, 4), Err(Error::Snapshot(_))));
}

#[test]
fn an_inner_snapshot_with_a_bad_checksum_is_refused_even_when_the_envelope_is_consistent() {
    // A writer that wrapped a corrupt snapshot file: the envelope checksum
    // matches, the snapshot's own does not.
    let mut bytes = envelope(b"some records");
    let inner_trailer = bytes.len() - 16;
    bytes[inner_trailer] ^= 1;
    let end = bytes.len() - 8;
    let sum = xxh3_64(&bytes[..end]);
    bytes[end..].copy_from_slice(&sum.to_le_bytes());
    let Err(Error::Snapshot(message)) = verify(&bytes, 16) else {
        panic!("accepted a corrupt inner snapshot");
    };
    assert!(message.contains("snapshot inside"), "{message}");
}

#[test]
fn a_saved_file_is_verified_and_a_missing_one_is_an_io_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("b.snap");
    std::fs::write(&path, envelope(b"x")).expect("write");
    assert_eq!(verify_snapshot_file(&path).expect("valid").revision, 40);
    assert!(matches!(
        verify_snapshot_file(&dir.path().join("none")),
        Err(Error::Io(_))
    ));
}

/// Serves `body` at `/v1/snapshot` with `status`, announcing `checksum`.
async fn serve(status: StatusCode, body: Vec<u8>, checksum: Option<String>) -> String {
    let app = Router::new().route(
        "/v1/snapshot",
        axum::routing::get(move || {
            let (body, checksum) = (body.clone(), checksum.clone());
            async move {
                let mut response: Response = (status, body).into_response();
                if let Some(sum) = checksum {
                    if let Ok(v) = sum.parse() {
                        response.headers_mut().insert(CHECKSUM_HEADER, v);
                    }
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn download_verifies_and_moves_on_from_a_busy_node() {
    let bytes = envelope(b"payload");
    let info = verify(&bytes, 1000).expect("valid");
    let busy = serve(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"code": "snapshot_in_progress", "message": "busy"}})
            .to_string()
            .into_bytes(),
        None,
    )
    .await;
    let good = serve(StatusCode::OK, bytes.clone(), Some(info.checksum.clone())).await;
    let client = Client::new(vec![busy, good]).expect("client");
    let mut out = Vec::new();
    let mut calls = 0;
    let got = client
        .snapshot(&mut out, |_, total| {
            calls += 1;
            assert_eq!(total, Some(bytes.len() as u64));
        })
        .await
        .expect("snapshot");
    assert_eq!(got, info);
    assert_eq!(out, bytes);
    assert!(calls > 0);
}

#[tokio::test]
async fn download_refuses_corrupt_bytes_and_reports_the_node_error() {
    let mut bytes = envelope(b"payload");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 4;
    let corrupt_node = serve(StatusCode::OK, bytes, None).await;
    let client = Client::new(vec![corrupt_node]).expect("client");
    let result = client.snapshot(&mut Vec::new(), |_, _| {}).await;
    assert!(matches!(result, Err(Error::Snapshot(_))), "{result:?}");

    let good = envelope(b"payload");
    let lying = serve(StatusCode::OK, good, Some("0000000000000000".into())).await;
    let client = Client::new(vec![lying]).expect("client");
    let result = client.snapshot(&mut Vec::new(), |_, _| {}).await;
    assert!(matches!(result, Err(Error::Snapshot(_))), "{result:?}");

    let busy = serve(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"code": "snapshot_in_progress", "message": "busy"}})
            .to_string()
            .into_bytes(),
        None,
    )
    .await;
    let client = Client::new(vec![busy]).expect("client");
    let result = client.snapshot(&mut Vec::new(), |_, _| {}).await;
    assert_eq!(
        result.as_ref().err().and_then(Error::code),
        Some("snapshot_in_progress"),
        "{result:?}"
    );
}
