//! The JSON transaction document `ballastctl txn` reads: the body of
//! `POST /v1/txn`, turned into a [`Txn`] so values travel through the client's
//! own encoding. Checked here, so a malformed document is a usage error (exit 2)
//! that names the problem before anything is sent.

use ballast_client::{Compare, CompareOp, Txn, TxnOp};
use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnDoc {
    #[serde(default)]
    compare: Vec<CompareDoc>,
    #[serde(default)]
    success: Vec<OpDoc>,
    #[serde(default)]
    failure: Vec<OpDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareDoc {
    key: String,
    target: String,
    op: String,
    value: Option<String>,
    encoding: Option<String>,
    version: Option<u64>,
    mod_revision: Option<u64>,
    create_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OpDoc {
    Put {
        key: String,
        value: String,
        #[serde(default)]
        encoding: Option<String>,
    },
    Delete {
        key: String,
        #[serde(default)]
        prefix: bool,
    },
    Get {
        key: String,
        #[serde(default)]
        prefix: bool,
    },
}

/// Parses a transaction document; the error says what is wrong and where.
pub fn parse(bytes: &[u8]) -> Result<Txn, String> {
    let doc: TxnDoc = serde_json::from_slice(bytes).map_err(|e| format!("txn document: {e}"))?;
    let compare = doc
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, c)| compare(c).map_err(|e| format!("txn document: compare[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = |branch: &str, ops: Vec<OpDoc>| {
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| op_of(op).map_err(|e| format!("txn document: {branch}[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Txn::new()
        .when(compare)
        .and_then(ops("success", doc.success)?)
        .or_else(ops("failure", doc.failure)?))
}

fn value(value: String, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None | Some("utf8") | Some("utf-8") => Ok(value.into_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .map_err(|e| format!("value is not valid base64: {e}")),
        Some(other) => Err(format!("unknown encoding {other:?} (utf8 or base64)")),
    }
}

fn compare(c: CompareDoc) -> Result<Compare, String> {
    let op = match c.op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        other => return Err(format!("unknown op {other:?} (=, !=, <, >)")),
    };
    let operands = [
        c.value.is_some(),
        c.version.is_some(),
        c.mod_revision.is_some(),
        c.create_revision.is_some(),
    ];
    if operands.iter().filter(|x| **x).count() != 1 {
        return Err("give exactly one of value, version, mod_revision, create_revision".to_owned());
    }
    if c.encoding.is_some() && c.value.is_none() {
        return Err("encoding is only valid with value".to_owned());
    }
    let mismatch = || format!("target {:?} does not match the operand given", c.target);
    match (
        c.target.as_str(),
        c.value,
        c.version,
        c.mod_revision,
        c.create_revision,
    ) {
        ("value", Some(v), ..) => Ok(Compare::value(c.key, op, value(v, c.encoding.as_deref())?)),
        ("version", None, Some(n), ..) => Ok(Compare::version(c.key, op, n)),
        ("mod_revision", None, None, Some(n), _) => Ok(Compare::mod_revision(c.key, op, n)),
        ("create_revision", None, None, None, Some(n)) => {
            Ok(Compare::create_revision(c.key, op, n))
        }
        ("value" | "version" | "mod_revision" | "create_revision", ..) => Err(mismatch()),
        (other, ..) => Err(format!(
            "unknown target {other:?} (value, version, mod_revision, create_revision)"
        )),
    }
}

fn op_of(op: OpDoc) -> Result<TxnOp, String> {
    Ok(match op {
        OpDoc::Put {
            key,
            value: v,
            encoding,
        } => TxnOp::put(key, value(v, encoding.as_deref())?),
        OpDoc::Delete { key, prefix: false } => TxnOp::delete(key),
        OpDoc::Delete { key, prefix: true } => TxnOp::delete_prefix(key),
        OpDoc::Get { key, prefix: false } => TxnOp::get(key),
        OpDoc::Get { key, prefix: true } => TxnOp::get_prefix(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_client::CompareTarget;

    #[test]
    fn parses_the_api_example() {
        let doc =
            br#"{"compare": [{"key": "app/mode", "target": "value", "op": "=", "value": "green"}],
                       "success": [{"put": {"key": "app/mode", "value": "blue"}}],
                       "failure": [{"get": {"key": "app/mode"}}]}"#;
        let Ok(txn) = parse(doc) else {
            panic!("API example refused");
        };
        assert_eq!(
            txn.compare,
            vec![Compare::value("app/mode", CompareOp::Equal, "green")]
        );
        assert_eq!(txn.success, vec![TxnOp::put("app/mode", "blue")]);
        assert_eq!(txn.failure, vec![TxnOp::get("app/mode")]);
    }

    #[test]
    fn every_target_op_and_encoding() {
        let doc = br#"{"compare": [
              {"key": "a", "target": "version", "op": "=", "version": 0},
              {"key": "b", "target": "mod_revision", "op": "<", "mod_revision": 9},
              {"key": "c", "target": "create_revision", "op": ">", "create_revision": 1},
              {"key": "d", "target": "value", "op": "!=", "value": "/wAB", "encoding": "base64"}],
            "success": [{"put": {"key": "x", "value": "/wAB", "encoding": "base64"}},
                        {"delete": {"key": "p/", "prefix": true}},
                        {"get": {"key": "q/", "prefix": true}}]}"#;
        let Ok(txn) = parse(doc) else {
            panic!("valid document refused");
        };
        assert_eq!(txn.compare.len(), 4);
        assert_eq!(
            txn.compare[3].target,
            CompareTarget::Value(vec![0xff, 0, 1])
        );
        assert_eq!(
            txn.success,
            vec![
                TxnOp::put("x", vec![0xff, 0, 1]),
                TxnOp::delete_prefix("p/"),
                TxnOp::get_prefix("q/"),
            ]
        );
        assert!(txn.failure.is_empty());
    }

    #[test]
    fn malformed_documents_say_where() {
        let err = |doc: &str| parse(doc.as_bytes()).err().unwrap_or_default();
        assert!(err("not json").contains("txn document"));
        assert!(err(r#"{"sucess": []}"#).contains("unknown field"));
        assert!(
            err(r#"{"compare": [{"key": "a", "target": "value", "op": "~", "value": "x"}]}"#)
                .contains("compare[0]: unknown op")
        );
        assert!(
            err(r#"{"compare": [{"key": "a", "target": "value", "op": "=", "version": 1}]}"#)
                .contains("does not match")
        );
        assert!(
            err(r#"{"compare": [{"key": "a", "target": "version", "op": "="}]}"#)
                .contains("exactly one")
        );
        assert!(err(
            r#"{"success": [{"put": {"key": "a", "value": "%%", "encoding": "base64"}}]}"#
        )
        .contains("success[0]: value is not valid base64"));
        assert!(err(r#"{"failure": [{"frob": {"key": "a"}}]}"#).contains("txn document"));
    }
}
