//! Versioned binary encoding for everything ballast persists or sends to peers.
//!
//! Every encoded value starts with a one-byte format version followed by the
//! postcard body, so a future format can be told apart from this one instead of
//! being misread.

use serde::{de::DeserializeOwned, Serialize};

/// The format version written in front of every persisted value.
pub const FORMAT_VERSION: u8 = 1;

/// Errors decoding or encoding a persisted value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value was empty: not even a version byte.
    #[error("empty value: no format version byte")]
    Empty,
    /// The value was written by a format this build does not know.
    #[error("unsupported format version {found} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// postcard failed.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Encodes `value` with the format version in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_extend(value, vec![FORMAT_VERSION])?)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_version_byte() {
        let bytes = encode(&("k", 7u64)).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (String, u64) = decode(&bytes).expect("decode");
        assert_eq!(back, ("k".to_string(), 7));
    }

    #[test]
    fn unknown_version_and_empty_are_rejected() {
        let mut bytes = encode(&1u32).expect("encode");
        bytes[0] = 99;
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(CodecError::UnsupportedVersion { found: 99 })
        ));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
