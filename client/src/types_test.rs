//! Decoding of every response shape in the HTTP contract.

use super::*;

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).expect("valid test JSON")
}

fn kv(key: &str, value: &[u8], create: u64, modr: u64, version: u64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modr,
        version,
    }
}

#[test]
fn value_round_trip() {
    assert_eq!(encode_value(b"green"), ("green".to_owned(), None));
    let (s, enc) = encode_value(&[0xff, 0x00, 0x10]);
    assert_eq!((s.as_str(), enc), ("/wAQ", Some("base64")));
    assert_eq!(decode_value(s, enc).ok(), Some(vec![0xff, 0x00, 0x10]));
    assert!(matches!(
        decode_value("!!".to_owned(), Some("base64")),
        Err(Error::Decode(_))
    ));
    assert!(matches!(
        decode_value("x".to_owned(), Some("rot13")),
        Err(Error::Decode(_))
    ));
}

#[test]
fn get_utf8_and_base64() {
    let w: WireGet = parse(
        r#"{"revision": 43, "kv": {"key": "app/mode", "value": "green",
            "create_revision": 7, "mod_revision": 43, "version": 3}}"#,
    );
    let r = w.into_response(Some(1)).expect("decodes");
    assert_eq!(r.revision, 43);
    assert_eq!(r.kv, Some(kv("app/mode", b"green", 7, 43, 3)));
    assert_eq!(r.kv.as_ref().and_then(|k| k.value_str()), Some("green"));

    let w: WireGet = parse(
        r#"{"revision": 44, "kv": {"key": "bin", "value": "/wAQ", "encoding": "base64",
            "create_revision": 44, "mod_revision": 44, "version": 1, "lease": 0}}"#,
    );
    let r = w.into_response(None).expect("decodes");
    assert_eq!(r.kv, Some(kv("bin", &[0xff, 0, 0x10], 44, 44, 1)));
    assert_eq!(r.kv.as_ref().and_then(|k| k.value_str()), None);
}

#[test]
fn revision_falls_back_to_header() {
    let w: WireGet = parse(r#"{"kv": null}"#);
    assert_eq!(w.into_response(Some(9)).map(|r| r.revision).ok(), Some(9));
    let w: WireGet = parse(r#"{"kv": null}"#);
    assert!(matches!(w.into_response(None), Err(Error::Decode(_))));
}

#[test]
fn range() {
    let w: WireRange = parse(
        r#"{"revision": 43, "more": true, "kvs": [
            {"key": "a/1", "value": "x", "create_revision": 2, "mod_revision": 3, "version": 2},
            {"key": "a/2", "value": "AAE=", "encoding": "base64", "create_revision": 4,
             "mod_revision": 4, "version": 1}]}"#,
    );
    let r = w.into_response(None).expect("decodes");
    assert_eq!(r.revision, 43);
    assert!(r.more);
    assert_eq!(
        r.kvs,
        vec![kv("a/1", b"x", 2, 3, 2), kv("a/2", &[0, 1], 4, 4, 1)]
    );

    let w: WireRange = parse(r#"{"revision": 5, "kvs": [], "more": false}"#);
    let r = w.into_response(None).expect("decodes");
    assert!(r.kvs.is_empty() && !r.more);
}

#[test]
fn put_and_delete() {
    let w: WirePut = parse(r#"{"revision": 43}"#);
    assert_eq!(
        w.into_response(None).ok(),
        Some(PutResponse {
            revision: 43,
            prev_kv: None
        })
    );
    let w: WirePut = parse(
        r#"{"revision": 44, "prev_kv": {"key": "k", "value": "old",
            "create_revision": 1, "mod_revision": 43, "version": 2}}"#,
    );
    assert_eq!(
        w.into_response(None).ok().and_then(|r| r.prev_kv),
        Some(kv("k", b"old", 1, 43, 2))
    );

    let w: WireDelete = parse(r#"{"revision": 44, "deleted": 5}"#);
    let r = w.into_response(None).expect("decodes");
    assert_eq!((r.revision, r.deleted, r.prev_kvs.len()), (44, 5, 0));
    let w: WireDelete = parse(
        r#"{"revision": 45, "deleted": 1, "prev_kvs": [{"key": "k", "value": "v",
            "create_revision": 1, "mod_revision": 2, "version": 2}]}"#,
    );
    let r = w.into_response(None).expect("decodes");
    assert_eq!(r.prev_kvs, vec![kv("k", b"v", 1, 2, 2)]);
}

#[test]
fn status_tolerates_extra_fields_and_null_leader() {
    let s: Status = parse(
        r#"{"node_id": 1, "leader": 1, "term": 3, "revision": 45, "compact_revision": 0,
            "state_hash": "ab12", "raft": {"last_log_index": 9, "committed": 9,
            "applied": 9, "state": "Leader", "vote": {"term": 3}},
            "members": [{"id": 1, "client_addr": "127.0.0.1:2379",
                         "peer_addr": "127.0.0.1:2380", "voter": true}],
            "uptime_secs": 12}"#,
    );
    assert_eq!(s.node_id, 1);
    assert_eq!(s.leader, Some(1));
    assert_eq!(s.raft.committed, Some(9));
    assert_eq!(s.raft.state, "Leader");
    assert_eq!(
        s.members,
        vec![Member {
            id: 1,
            client_addr: "127.0.0.1:2379".to_owned(),
            peer_addr: "127.0.0.1:2380".to_owned(),
            voter: true
        }]
    );

    let s: Status = parse(
        r#"{"node_id": 2, "leader": null, "term": 0, "revision": 0, "compact_revision": 0,
            "state_hash": "", "raft": {"last_log_index": null, "committed": null,
            "applied": null, "state": "Follower"}, "members": []}"#,
    );
    assert_eq!(s.leader, None);
    assert_eq!(s.raft.applied, None);
}

#[test]
fn error_document() {
    let e: WireErrorDoc = parse(
        r#"{"error": {"code": "no_leader", "message": "no leader",
            "leader": {"id": 2, "client_addr": "127.0.0.1:2479"}}}"#,
    );
    assert_eq!(e.error.code, "no_leader");
    assert_eq!(
        e.error.leader.and_then(|l| l.client_addr).as_deref(),
        Some("127.0.0.1:2479")
    );
    let e: WireErrorDoc =
        parse(r#"{"error": {"code": "key_not_found", "message": "m"}, "revision": 43}"#);
    assert_eq!(e.revision, Some(43));
}
