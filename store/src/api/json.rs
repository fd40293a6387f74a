//! JSON shapes of the HTTP API answers. The key-value shape and the value
//! encoding rule, shared with watch messages, live in [`crate::kv::json`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Serialize;

use super::error::{ApiError, ErrorCode};
pub use crate::kv::json::{kvs_json, Encoding, KvJson};
use crate::kv::TxnOpResponse;

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

/// Answer to `PUT /v1/kv/{key}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PutJson {
    /// Revision of the write.
    pub revision: u64,
    /// Previous key-value, when asked for and present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KvJson>,
}

/// Answer to a single-key `GET`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GetJson {
    /// Revision the read reflects.
    pub revision: u64,
    /// The key-value.
    pub kv: KvJson,
}

/// Answer to `DELETE`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    fn base64_values_decode() {
        assert_eq!(
            decode_value("/wA=".into(), Some(Encoding::Base64)).expect("decode"),
            vec![0xff, 0x00]
        );
        assert_eq!(
            decode_value("green".into(), None).expect("utf8"),
            b"green".to_vec()
        );
        assert!(decode_value("%%%".into(), Some(Encoding::Base64)).is_err());
    }
}
