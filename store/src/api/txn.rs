//! The JSON form of a transaction request and its conversion into a [`TxnRequest`].

use serde::Deserialize;

use super::error::{ApiError, ErrorCode};
use super::json::{decode_value, Encoding};
use crate::kv::{Compare, CompareOp, CompareTarget, TxnOp, TxnRequest};

/// `POST /v1/txn` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnRequestJson {
    /// Conditions.
    #[serde(default)]
    pub compare: Vec<CompareJson>,
    /// Ops when every condition holds.
    #[serde(default)]
    pub success: Vec<TxnOpJson>,
    /// Ops otherwise.
    #[serde(default)]
    pub failure: Vec<TxnOpJson>,
    /// The client session of the write (see [`super::session`]).
    #[serde(default)]
    pub session: Option<super::session::SessionJson>,
}

/// What a compare looks at.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetJson {
    /// The value.
    Value,
    /// The version.
    Version,
    /// The mod revision.
    ModRevision,
    /// The create revision.
    CreateRevision,
}

/// A compare operator.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
pub enum OpJson {
    /// Equal.
    #[serde(rename = "=")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
}

/// One compare: the operand goes in the field named like the target.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareJson {
    /// Key.
    pub key: String,
    /// Target.
    pub target: TargetJson,
    /// Operator.
    pub op: OpJson,
    /// Operand for `target: value`.
    pub value: Option<String>,
    /// Encoding of `value`.
    pub encoding: Option<Encoding>,
    /// Operand for `target: version`.
    pub version: Option<u64>,
    /// Operand for `target: mod_revision`.
    pub mod_revision: Option<u64>,
    /// Operand for `target: create_revision`.
    pub create_revision: Option<u64>,
}

/// A put op.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutOpJson {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Encoding of `value`.
    pub encoding: Option<Encoding>,
}

/// A delete or get op.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyOpJson {
    /// Key or prefix.
    pub key: String,
    /// Treat `key` as a prefix.
    #[serde(default)]
    pub prefix: bool,
}

/// One op of a branch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOpJson {
    /// `{"put": {...}}`
    Put(PutOpJson),
    /// `{"delete": {...}}`
    Delete(KeyOpJson),
    /// `{"get": {...}}`
    Get(KeyOpJson),
}

fn operand(c: &CompareJson) -> Result<CompareTarget, ApiError> {
    let given = [
        ("value", c.value.is_some()),
        ("version", c.version.is_some()),
        ("mod_revision", c.mod_revision.is_some()),
        ("create_revision", c.create_revision.is_some()),
    ];
    let count = given.iter().filter(|(_, g)| *g).count();
    let missing = |name: &str| {
        ApiError::refused(
            ErrorCode::InvalidRequest,
            format!(
                "compare on {name} of key {:?} needs exactly one operand field, {name:?}",
                c.key
            ),
        )
    };
    if count != 1 {
        let name = match c.target {
            TargetJson::Value => "value",
            TargetJson::Version => "version",
            TargetJson::ModRevision => "mod_revision",
            TargetJson::CreateRevision => "create_revision",
        };
        return Err(missing(name));
    }
    match c.target {
        TargetJson::Value => {
            let v = c.value.clone().ok_or_else(|| missing("value"))?;
            Ok(CompareTarget::Value(decode_value(v, c.encoding)?))
        }
        TargetJson::Version => c
            .version
            .map(CompareTarget::Version)
            .ok_or_else(|| missing("version")),
        TargetJson::ModRevision => c
            .mod_revision
            .map(CompareTarget::ModRevision)
            .ok_or_else(|| missing("mod_revision")),
        TargetJson::CreateRevision => c
            .create_revision
            .map(CompareTarget::CreateRevision)
            .ok_or_else(|| missing("create_revision")),
    }
}

fn op(o: TxnOpJson) -> Result<TxnOp, ApiError> {
    Ok(match o {
        TxnOpJson::Put(p) => TxnOp::Put {
            key: p.key,
            value: decode_value(p.value, p.encoding)?,
        },
        TxnOpJson::Delete(d) => TxnOp::Delete {
            key: d.key,
            prefix: d.prefix,
        },
        TxnOpJson::Get(g) => TxnOp::Get {
            key: g.key,
            prefix: g.prefix,
        },
    })
}

impl TryFrom<TxnRequestJson> for TxnRequest {
    type Error = ApiError;

    fn try_from(t: TxnRequestJson) -> Result<Self, ApiError> {
        if t.compare
            .iter()
            .any(|c| c.encoding.is_some() && c.value.is_none())
        {
            return Err(ApiError::refused(
                ErrorCode::InvalidRequest,
                "\"encoding\" given without \"value\"",
            ));
        }
        let compare = t
            .compare
            .iter()
            .map(|c| {
                Ok(Compare {
                    key: c.key.clone(),
                    target: operand(c)?,
                    op: match c.op {
                        OpJson::Eq => CompareOp::Equal,
                        OpJson::Ne => CompareOp::NotEqual,
                        OpJson::Lt => CompareOp::Less,
                        OpJson::Gt => CompareOp::Greater,
                    },
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(TxnRequest {
            compare,
            success: t.success.into_iter().map(op).collect::<Result<_, _>>()?,
            failure: t.failure.into_iter().map(op).collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TxnRequest, ApiError> {
        let json: TxnRequestJson = serde_json::from_str(s)
            .map_err(|e| ApiError::refused(ErrorCode::InvalidJson, e.to_string()))?;
        TxnRequest::try_from(json)
    }

    #[test]
    fn parses_the_design_example() {
        let t = parse(
            r#"{"compare": [{"key": "app/mode", "target": "value", "op": "=", "value": "green"}],
                "success": [{"put": {"key": "app/mode", "value": "blue"}}],
                "failure": [{"get": {"key": "app/mode"}}]}"#,
        )
        .expect("valid");
        assert_eq!(t.compare[0].target, CompareTarget::Value(b"green".to_vec()));
        assert_eq!(t.compare[0].op, CompareOp::Equal);
        assert!(
            matches!(&t.success[0], TxnOp::Put { key, value } if key == "app/mode" && value == b"blue")
        );
        assert!(matches!(&t.failure[0], TxnOp::Get { prefix: false, .. }));
    }

    #[test]
    fn operands_must_match_the_target() {
        assert!(parse(
            r#"{"compare": [{"key": "k", "target": "version", "op": "=", "version": 0}]}"#
        )
        .is_ok());
        assert!(parse(
            r#"{"compare": [{"key": "k", "target": "version", "op": "=", "value": "x"}]}"#
        )
        .is_err());
        assert!(parse(r#"{"compare": [{"key": "k", "target": "version", "op": "="}]}"#).is_err());
        assert!(
            parse(r#"{"compare": [{"key": "k", "target": "size", "op": "=", "version": 1}]}"#)
                .is_err()
        );
        assert!(parse(
            r#"{"compare": [{"key": "k", "target": "version", "op": "<=", "version": 1}]}"#
        )
        .is_err());
        assert!(parse(r#"{"success": [{"put": {"key": "k"}}]}"#).is_err());
        assert!(parse(r#"{"success": [{"put": {"key": "k", "value": "v", "ttl": 3}}]}"#).is_err());
        assert!(parse(r#"{"sucess": []}"#).is_err());
    }
}
