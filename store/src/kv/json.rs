//! The JSON form of a key-value, shared by the HTTP answers and the watch
//! messages, and the value encoding rule: a value is a UTF-8 string when it
//! is valid UTF-8, otherwise standard base64 with `"encoding": "base64"`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::types::KeyValue;

/// How a JSON value string is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The string is the value (UTF-8).
    Utf8,
    /// The string is standard base64 of the value bytes.
    Base64,
}

/// A key-value as JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// A key-value as JSON, borrowed from storage: the same document as
/// [`KvJson`], written without copying the key or a UTF-8 value (streamed
/// range reads write millions of them).
#[derive(Debug, Clone, Serialize)]
pub struct KvJsonRef<'a> {
    /// The key.
    pub key: &'a str,
    /// The value, as UTF-8 or base64.
    pub value: std::borrow::Cow<'a, str>,
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

impl<'a> KvJsonRef<'a> {
    /// The JSON form of `key` with `value` and its revisions.
    pub fn new(
        key: &'a str,
        value: &'a [u8],
        create_revision: u64,
        mod_revision: u64,
        version: u64,
    ) -> Self {
        let (value, encoding) = match std::str::from_utf8(value) {
            Ok(s) => (std::borrow::Cow::Borrowed(s), None),
            Err(_) => (
                std::borrow::Cow::Owned(BASE64.encode(value)),
                Some(Encoding::Base64),
            ),
        };
        KvJsonRef {
            key,
            value,
            encoding,
            create_revision,
            mod_revision,
            version,
        }
    }

    /// An upper bound of [`KvJsonRef::encoded_len`], without scanning the
    /// strings: every byte escaped at worst takes six (`\u001f`).
    pub fn encoded_len_bound(&self) -> usize {
        const FIXED: usize = 128; // field names, punctuation, three u64s
        FIXED + 6 * (self.key.len() + self.value.len())
    }

    /// The exact length of this key-value written with `serde_json`.
    pub fn encoded_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Writing to a counter cannot fail, nor can serializing strings
        // and integers.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }
}

/// Counts the bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

    #[test]
    fn the_borrowed_form_writes_the_same_document_and_knows_its_length() {
        let values: [&[u8]; 5] = [
            b"green",
            &[0xff, 0x00, 0x01],
            b"quote \" back\\slash \n\t\x01\x1f control",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"",
        ];
        for value in values {
            let kv = KeyValue {
                key: "app/\"k\"\x02".into(),
                value: value.to_vec(),
                create_revision: 1,
                mod_revision: u64::MAX,
                version: 12,
            };
            let owned = serde_json::to_vec(&KvJson::from(kv.clone())).expect("json");
            let borrowed = KvJsonRef::new(&kv.key, &kv.value, 1, u64::MAX, 12);
            let written = serde_json::to_vec(&borrowed).expect("json");
            assert_eq!(written, owned);
            assert_eq!(borrowed.encoded_len(), written.len());
            assert!(borrowed.encoded_len_bound() >= written.len());
        }
    }
}
