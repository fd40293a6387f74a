//! Reading request input, the same way for every handler: the key in the
//! path ([`KeyPath`]), the query string ([`ApiQuery`]) and the body
//! ([`read_body`]). Every refusal is an [`ApiError`] with a stable code.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, RawPathParamsRejection};
use axum::extract::{FromRequestParts, Query, RawPathParams};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// The key from the path (`/v1/kv/{*key}`, percent-decoded), empty on the
/// bare `/v1/kv/` routes. A malformed percent escape (`%ZZ`, a lone `%`) is
/// refused rather than stored literally, so one key has one spelling.
pub struct KeyPath(pub String);

/// Whether every `%` in `path` starts a two-hex-digit escape.
fn well_escaped(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if !well_escaped(parts.uri.path()) {
            return Err(ApiError::refused(
                ErrorCode::InvalidKey,
                "the key in the path has a malformed percent escape",
            ));
        }
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e: RawPathParamsRejection| {
                ApiError::refused(
                    ErrorCode::InvalidKey,
                    format!("bad key in path: {}", e.body_text()),
                )
            })?;
        Ok(KeyPath(
            params
                .iter()
                .find(|(name, _)| *name == "key")
                .map(|(_, value)| value.to_string())
                .unwrap_or_default(),
        ))
    }
}

/// The query string parsed into `T`; anything that does not parse (an
/// unknown parameter, a malformed value) is `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::refused(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// A `400 invalid_query` for a query that parses but is not allowed.
pub fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::refused(ErrorCode::InvalidQuery, message)
}

/// What a body is, which decides the code when it is over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The body is a value (`PUT /v1/kv`): over the limit is `value_too_large`.
    Value,
    /// The body is a whole request (JSON): over the limit is `request_too_large`.
    Request,
}

/// The one way a handler reads its body: over the body limit is a `413`
/// (`value_too_large` or `request_too_large` by `kind`), a body that cannot
/// be read for any other reason (the connection broke) is `400 invalid_request`.
/// `limit` is the limit that matters to the caller, for the message.
pub fn read_body(
    body: Result<Bytes, BytesRejection>,
    kind: BodyKind,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let (code, what) = match kind {
                BodyKind::Value => (ErrorCode::ValueTooLarge, "value"),
                BodyKind::Request => (ErrorCode::RequestTooLarge, "request"),
            };
            ApiError::refused(
                code,
                format!(
                    "could not read the {what}: {} (limit {limit} bytes)",
                    e.body_text()
                ),
            )
        } else {
            ApiError::refused(
                ErrorCode::InvalidRequest,
                format!("could not read the body: {}", e.body_text()),
            )
        }
    })
}

/// Parses a JSON body into `T`; a body that does not fit is `400
/// invalid_json`, its message starting with `what`. Every body of the API is
/// a JSON object: an array, a string, a number or `null` is refused, even
/// where serde would read a struct from an array of its fields.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::refused(
            ErrorCode::InvalidJson,
            format!("{what}: the body must be a JSON object"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::refused(ErrorCode::InvalidJson, format!("{what}: {e}")))
}
