//! The JSON form of a key-value, shared by the HTTP answers and the watch
//! messages, and the value encoding rule: a value is a UTF-8 string when it
//! is valid UTF-8, otherwise standard base64 with `"encoding": "base64"`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::types::KeyValue;

/// How a JSON value string is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The string is the value (UTF-8).
    Utf8,
    /// The string is standard base64 of the value bytes.
    Base64,
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
        assert_eq!(binary["value"], "/wA=");
    }
}
