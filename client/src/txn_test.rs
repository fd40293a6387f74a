//! Transaction JSON encoding and decoding.

use serde_json::json;

use super::*;

fn to_json(txn: &Txn) -> serde_json::Value {
    serde_json::to_value(txn.to_wire()).expect("txn serializes")
}

#[test]
fn encodes_every_compare_and_op() {
    let txn = Txn::new()
        .when(vec![
            Compare::value("app/mode", CompareOp::Equal, "green"),
            Compare::value("bin", CompareOp::NotEqual, vec![0xffu8, 0x00]),
            Compare::version("k", CompareOp::Equal, 0),
            Compare::mod_revision("k", CompareOp::Less, 5),
            Compare::create_revision("k", CompareOp::Greater, 2),
        ])
        .and_then(vec![
            TxnOp::put("app/mode", "blue"),
            TxnOp::put("bin", vec![0xffu8]),
            TxnOp::delete("k"),
            TxnOp::delete_prefix("p/"),
        ])
        .or_else(vec![TxnOp::get("app/mode"), TxnOp::get_prefix("p/")]);

    assert_eq!(
        to_json(&txn),
        json!({
            "compare": [
                {"key": "app/mode", "target": "value", "op": "=", "value": "green"},
                {"key": "bin", "target": "value", "op": "!=", "value": "/wA=", "encoding": "base64"},
                {"key": "k", "target": "version", "op": "=", "version": 0},
                {"key": "k", "target": "mod_revision", "op": "<", "mod_revision": 5},
                {"key": "k", "target": "create_revision", "op": ">", "create_revision": 2},
            ],
            "success": [
                {"put": {"key": "app/mode", "value": "blue"}},
                {"put": {"key": "bin", "value": "/w==", "encoding": "base64"}},
                {"delete": {"key": "k", "prefix": false}},
                {"delete": {"key": "p/", "prefix": true}},
            ],
            "failure": [
                {"get": {"key": "app/mode", "prefix": false}},
                {"get": {"key": "p/", "prefix": true}},
            ],
        })
    );
}

#[test]
fn empty_txn_has_all_three_lists() {
    assert_eq!(
        to_json(&Txn::new()),
        json!({"compare": [], "success": [], "failure": []})
    );
}

#[test]
fn decodes_responses() {
    let w: WireTxnResponse = serde_json::from_str(
        r#"{"succeeded": true, "revision": 45, "responses": [
            {"put": {"revision": 45}},
            {"delete": {"deleted": 1}},
            {"get": {"kvs": [{"key": "k", "value": "AQI=", "encoding": "base64",
                              "create_revision": 3, "mod_revision": 45, "version": 2}]}},
            {"get": {"kvs": []}}]}"#,
    )
    .expect("valid JSON");
    let r = w.into_response(None).expect("decodes");
    assert!(r.succeeded);
    assert_eq!(r.revision, 45);
    assert_eq!(
        r.responses,
        vec![
            TxnOpResponse::Put { revision: 45 },
            TxnOpResponse::Delete { deleted: 1 },
            TxnOpResponse::Get {
                kvs: vec![KeyValue {
                    key: "k".to_owned(),
                    value: vec![1, 2],
                    create_revision: 3,
                    mod_revision: 45,
                    version: 2
                }]
            },
            TxnOpResponse::Get { kvs: vec![] },
        ]
    );
}

#[test]
fn rejects_ambiguous_op_response() {
    let w: WireTxnResponse = serde_json::from_str(
        r#"{"succeeded": true, "revision": 1, "responses": [{"put": {}, "delete": {}}]}"#,
    )
    .expect("valid JSON");
    assert!(matches!(w.into_response(None), Err(Error::Decode(_))));
    let w: WireTxnResponse =
        serde_json::from_str(r#"{"succeeded": true, "revision": 1, "responses": [{}]}"#)
            .expect("valid JSON");
    assert!(matches!(w.into_response(None), Err(Error::Decode(_))));
}

#[test]
fn cas_shapes() {
    let create = to_json(&cas_txn("k", None, b"v".to_vec()));
    assert_eq!(
        create["compare"],
        json!([{"key": "k", "target": "version", "op": "=", "version": 0}])
    );
    assert_eq!(
        create["success"],
        json!([{"put": {"key": "k", "value": "v"}}])
    );
    assert_eq!(
        create["failure"],
        json!([{"get": {"key": "k", "prefix": false}}])
    );

    let swap = to_json(&cas_txn("k", Some(b"old"), b"new".to_vec()));
    assert_eq!(
        swap["compare"],
        json!([
            {"key": "k", "target": "version", "op": ">", "version": 0},
            {"key": "k", "target": "value", "op": "=", "value": "old"},
        ])
    );

    let current = KeyValue {
        key: "k".to_owned(),
        value: b"other".to_vec(),
        create_revision: 1,
        mod_revision: 2,
        version: 2,
    };
    let failed = cas_result(TxnResponse {
        succeeded: false,
        revision: 7,
        responses: vec![TxnOpResponse::Get {
            kvs: vec![current.clone()],
        }],
    });
    assert_eq!(
        failed,
        CasResult {
            succeeded: false,
            revision: 7,
            current: Some(current)
        }
    );
    let ok = cas_result(TxnResponse {
        succeeded: true,
        revision: 8,
        responses: vec![TxnOpResponse::Put { revision: 8 }],
    });
    assert_eq!((ok.succeeded, ok.revision, ok.current), (true, 8, None));
}
