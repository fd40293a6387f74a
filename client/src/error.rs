//! The client's error type.
//!
//! The variants follow one rule: a caller must be able to tell "nothing happened"
//! from "the server refused" from "nobody knows". Transport failures
//! ([`Error::Transport`]) and server answers ([`Error::Api`]) are kept apart, and a
//! write whose outcome cannot be known is [`Error::Indeterminate`], never a plain
//! failure.

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No endpoint could be reached (connection refused, DNS failure, connect
    /// timeout, or a read that kept failing in transit) within the retry budget.
    /// For a write this means the request was never sent, so nothing was applied.
    #[error("could not reach the cluster (last endpoint {endpoint}): {message}")]
    Transport {
        /// The last endpoint tried.
        endpoint: String,
        /// What went wrong on the last attempt, and how many attempts were made.
        message: String,
    },

    /// The server answered with an error document (`{"error": {"code", "message"}}`).
    /// A 4xx means the request was rejected and not applied; a 503 `no_leader` or
    /// `not_ready` returned after the retry budget ran out was not applied either.
    #[error("server error {status} {code}: {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Machine-readable error code from the contract (`key_not_found`,
        /// `compacted`, `no_leader`, ...). `unknown` when the body was not an
        /// error document.
        code: String,
        /// Human-readable message from the server.
        message: String,
        /// The revision the server reported with the error, when it did.
        revision: Option<u64>,
    },

    /// A write may or may not have been applied: the request was (or may have been)
    /// sent, and then the answer was lost (timeout, connection reset, a 503
    /// `timeout`, a 5xx other than 503). Under a session (the default) the
    /// client has sent it again until its retry budget ran out, or until the
    /// cluster no longer remembered its result (`410 session_expired`); without
    /// one it never re-sends it. Either way the caller must read the key to
    /// find out.
    #[error("outcome unknown: {message}")]
    Indeterminate {
        /// What happened, including the endpoint.
        message: String,
    },

    /// The caller passed something the client refuses before any network call
    /// (an empty endpoint list, a malformed endpoint, an empty key, a key that
    /// cannot be carried in a URL path).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The server answered 2xx but the body did not match the contract.
    #[error("could not decode the server's answer: {0}")]
    Decode(String),

    /// A backup (downloaded or read from a file) is not a valid ballast
    /// backup: corrupt, truncated, or something else entirely.
    #[error("invalid snapshot: {0}")]
    Snapshot(String),

    /// A local file could not be read or written.
    #[error("local I/O: {0}")]
    Io(String),

    /// A watch asked for history the cluster has already compacted: every
    /// revision up to `compact_revision` is gone. The watch ends; read the
    /// current state again (at `revision` or later) and watch from after it.
    #[error("history compacted up to revision {compact_revision} (current revision {revision}); re-read and watch again")]
    Compacted {
        /// The cluster's compact revision: history before it is gone.
        compact_revision: u64,
        /// The node's current revision when it refused.
        revision: u64,
    },
}

impl Error {
    /// `410 removed`: the node answering was removed from the cluster. It
    /// serves and applies nothing; the members that remain may, so callers
    /// move on to the next endpoint as from a dead node. (`410
    /// session_expired` is a session's own answer and stays final.)
    pub(crate) fn is_node_removed(&self) -> bool {
        matches!(self, Error::Api { status: 410, code, .. } if code == "removed")
    }

    /// The API error code, when the server answered with an error document.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the error guarantees that a write was not applied.
    ///
    /// `Indeterminate` and `Decode` (the server answered 2xx, so it was applied)
    /// return false; everything else returns true.
    pub fn is_definitely_not_applied(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::InvalidArgument(_) => true,
            Error::Api { code, status, .. } => {
                *status < 500
                    || (*status == 503
                        && (code == "no_leader"
                            || code == "not_ready"
                            || code == "too_many_requests"))
                    || (*status == 507 && (code == "quota_exceeded" || code == "no_space"))
            }
            Error::Compacted { .. } | Error::Snapshot(_) | Error::Io(_) => true,
            Error::Indeterminate { .. } | Error::Decode(_) => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> Error {
        Error::Api {
            status,
            code: code.to_owned(),
            message: String::new(),
            revision: None,
        }
    }

    #[test]
    fn applied_classification() {
        assert!(api(400, "invalid_key").is_definitely_not_applied());
        assert!(api(503, "no_leader").is_definitely_not_applied());
        assert!(api(503, "not_ready").is_definitely_not_applied());
        assert!(!api(503, "timeout").is_definitely_not_applied());
        assert!(!api(500, "internal").is_definitely_not_applied());
        assert!(api(507, "quota_exceeded").is_definitely_not_applied());
        assert!(api(507, "no_space").is_definitely_not_applied());
        assert!(!Error::Indeterminate {
            message: String::new()
        }
        .is_definitely_not_applied());
        assert_eq!(api(404, "key_not_found").code(), Some("key_not_found"));
    }
}
