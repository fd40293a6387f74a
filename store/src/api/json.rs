//! JSON shapes of the HTTP API and the value encoding rule: a value is a UTF-8
//! string when it is valid UTF-8, otherwise standard base64 with
//! `"encoding": "base64"`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use crate::kv::{KeyValue, TxnOpResponse};

/// How a JSON value string is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The string is the value (UTF-8).
    Utf8,
    /// The string is standard base64 of the value bytes.
    Base64,
}

/// Decodes a JSON value string according to its encoding.
pub fn decode_value(value: String, encoding: Option<Encoding>) -> Result<Vec<u8>, ApiError> {
    match encoding {
        None | Some(Encoding::Utf8) => Ok(value.into_bytes()),
        Some(Encoding::Base64) => BASE64.decode(value.as_bytes()).map_err(|e| {
            ApiError::refused(
                ErrorCode::InvalidJson,
                format!("value is not valid base64: {e}"),
            )
        }),
    }
}

/// A key-value as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct KvJson {
    /// The key.
    pub key: String,
    /// The value, as UTF-8 or base64.
    pub value: String,
    /// Present (`base64`) when the value is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// Creating revision.
    pub create_revision: u64,
    /// Last modifying revision.
    pub mod_revision: u64,
    /// Writes since creation.
    pub version: u64,
}

impl From<KeyValue> for KvJson {
    fn from(kv: KeyValue) -> Self {
        let (value, encoding) = match String::from_utf8(kv.value) {
            Ok(s) => (s, None),
            Err(e) => (BASE64.encode(e.into_bytes()), Some(Encoding::Base64)),
        };
        KvJson {
            key: kv.key,
            value,
            encoding,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

/// Converts key-values to JSON.
pub fn kvs_json(kvs: Vec<KeyValue>) -> Vec<KvJson> {
    kvs.into_iter().map(KvJson::from).collect()
}

/// Answer to `PUT /v1/kv/{key}`.
#[derive(Debug, Serialize)]
pub struct PutJson {
    /// Revision of the write.
    pub revision: u64,
    /// Previous key-value, when asked for and present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KvJson>,
}

/// Answer to a single-key `GET`.
#[derive(Debug, Serialize)]
pub struct GetJson {
    /// Revision the read reflects.
    pub revision: u64,
    /// The key-value.
    pub kv: KvJson,
}

/// Answer to a prefix `GET`.
#[derive(Debug, Serialize)]
pub struct RangeJson {
    /// Revision the read reflects.
    pub revision: u64,
    /// Matching key-values in key order.
    pub kvs: Vec<KvJson>,
    /// Whether `limit` cut the result short.
    pub more: bool,
}

/// Answer to `DELETE`.
#[derive(Debug, Serialize)]
pub struct DeleteJson {
    /// Revision of the delete (unchanged if nothing was deleted).
    pub revision: u64,
    /// How many keys were deleted.
    pub deleted: u64,
    /// The deleted key-values, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kvs: Option<Vec<KvJson>>,
}

/// One op's answer in a transaction.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResponseJson {
    /// A put.
    Put {
        /// Revision of the write.
        revision: u64,
    },
    /// A delete.
    Delete {
        /// Keys deleted.
        deleted: u64,
    },
    /// A read.
    Get {
        /// Matching key-values.
        kvs: Vec<KvJson>,
    },
}

impl From<TxnOpResponse> for TxnOpResponseJson {
    fn from(r: TxnOpResponse) -> Self {
        match r {
            TxnOpResponse::Put { revision } => TxnOpResponseJson::Put { revision },
            TxnOpResponse::Delete { deleted } => TxnOpResponseJson::Delete { deleted },
            TxnOpResponse::Get { kvs } => TxnOpResponseJson::Get { kvs: kvs_json(kvs) },
        }
    }
}

/// Answer to `POST /v1/txn`.
#[derive(Debug, Serialize)]
pub struct TxnJson {
    /// Whether every compare held.
    pub succeeded: bool,
    /// Revision after the transaction.
    pub revision: u64,
    /// One answer per op of the branch that ran.
    pub responses: Vec<TxnOpResponseJson>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_values_are_strings_and_others_base64() {
        let kv = |value: Vec<u8>| KeyValue {
            key: "k".into(),
            value,
            create_revision: 1,
            mod_revision: 2,
            version: 2,
        };
        let text = serde_json::to_value(KvJson::from(kv(b"green".to_vec()))).expect("json");
        assert_eq!(text["value"], "green");
        assert!(text.get("encoding").is_none());
        let binary = serde_json::to_value(KvJson::from(kv(vec![0xff, 0x00]))).expect("json");
        assert_eq!(binary["encoding"], "base64");
        let back = decode_value(
            binary["value"].as_str().expect("str").to_string(),
            Some(Encoding::Base64),
        );
        assert_eq!(back.expect("decode"), vec![0xff, 0x00]);
        assert!(decode_value("%%%".into(), Some(Encoding::Base64)).is_err());
    }
}
