//! Exit codes and the errors that lead to them. Every non-zero exit goes through
//! [`CliError`], so the code a script sees and the message on stderr come from
//! one table.

use std::process::ExitCode;

use serde_json::json;

/// Why the command did not exit 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Exit 1: `get` of a key that does not exist (at the revision read).
    NotFound(String),
    /// Exit 1: `cas` or `txn` ran, and its comparison did not hold.
    CompareFailed(String),
    /// Exit 1: `rollout status` ran, and some replica has not applied the revision.
    NotConverged(String),
    /// Exit 2: bad arguments or input, refused before any request.
    Usage(String),
    /// Exit 3: the cluster answered and refused the request (a 4xx, or an answer
    /// that does not match the API). Nothing was applied.
    Api {
        /// HTTP status (0 when the answer could not be decoded).
        status: u16,
        /// The API error code (`invalid_key`, `value_too_large`, ...).
        code: String,
        /// What the server said.
        message: String,
    },
    /// Exit 4: no endpoint could be reached, or the cluster had no leader or
    /// quorum within the retry budget. A write was not applied.
    Unavailable(String),
    /// Exit 6: a snapshot file is corrupt, truncated or not a backup, or a
    /// local file could not be read or written.
    Snapshot(String),
    /// Exit 5: a write was sent and its answer lost; it may or may not have been
    /// applied. Read the key before doing anything else.
    Indeterminate(String),
}

impl CliError {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            CliError::NotFound(_) | CliError::CompareFailed(_) | CliError::NotConverged(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Api { .. } => 3,
            CliError::Unavailable(_) => 4,
            CliError::Indeterminate(_) => 5,
            CliError::Snapshot(_) => 6,
        }
    }

    /// The exit code as the process returns it.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The line printed on stderr.
    pub fn message(&self) -> String {
        match self {
            CliError::NotFound(m) | CliError::CompareFailed(m) | CliError::NotConverged(m) => {
                m.clone()
            }
            CliError::Usage(m) => format!("invalid argument: {m}"),
            CliError::Snapshot(m) => m.clone(),
            CliError::Api {
                status,
                code,
                message,
            } => format!("the cluster refused the request ({status} {code}): {message}"),
            CliError::Unavailable(m) => format!("cluster unavailable: {m}"),
            CliError::Indeterminate(m) => format!(
                "outcome unknown: {m}; the write may or may not have been applied, \
                 read the key before retrying"
            ),
        }
    }

    /// The JSON document printed on stdout with `--output json`, for errors that
    /// have no result document of their own (exit 3, 4, 5 and 6). `get` of a
    /// missing key and a failed compare print their result instead; usage errors
    /// print nothing on stdout.
    pub fn json_document(&self) -> Option<serde_json::Value> {
        let (kind, code) = match self {
            CliError::NotFound(_)
            | CliError::CompareFailed(_)
            | CliError::NotConverged(_)
            | CliError::Usage(_) => return None,
            CliError::Api { code, .. } => ("api_error", Some(code.as_str())),
            CliError::Unavailable(_) => ("unavailable", None),
            CliError::Indeterminate(_) => ("indeterminate", None),
            CliError::Snapshot(_) => ("snapshot", None),
        };
        Some(json!({
            "error": {
                "kind": kind,
                "code": code,
                "message": self.message(),
                "exit_code": self.code(),
            }
        }))
    }
}

impl From<ballast_client::Error> for CliError {
    fn from(e: ballast_client::Error) -> Self {
        use ballast_client::Error as E;
        match e {
            E::Transport { .. } => CliError::Unavailable(e.to_string()),
            E::Api {
                status,
                ref code,
                ref message,
                ..
            } => {
                if status >= 500
                    && !(status == 507 && (code == "quota_exceeded" || code == "no_space"))
                {
                    // 503 no_leader / not_ready / timeout (reads), or a node fault
                    // that every retry hit: the cluster cannot serve the request.
                    CliError::Unavailable(format!("{status} {code}: {message}"))
                } else if status == 404 && code == "key_not_found" {
                    CliError::NotFound(message.clone())
                } else {
                    CliError::Api {
                        status,
                        code: code.clone(),
                        message: message.clone(),
                    }
                }
            }
            E::Indeterminate { message } => CliError::Indeterminate(message),
            E::InvalidArgument(m) => CliError::Usage(m),
            E::Decode(m) => CliError::Api {
                status: 0,
                code: "bad_answer".to_owned(),
                message: m,
            },
            E::Snapshot(_) | E::Io(_) => CliError::Snapshot(e.to_string()),
            E::Compacted { .. } => CliError::Api {
                status: 0,
                code: "compacted".to_owned(),
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_client::Error as E;

    fn api(status: u16, code: &str) -> E {
        E::Api {
            status,
            code: code.to_owned(),
            message: "m".to_owned(),
            revision: None,
        }
    }

    #[test]
    fn client_errors_map_to_documented_codes() {
        let code = |e: E| CliError::from(e).code();
        assert_eq!(code(api(400, "invalid_key")), 3);
        assert_eq!(code(api(413, "value_too_large")), 3);
        assert_eq!(code(api(404, "key_not_found")), 1);
        assert_eq!(code(api(503, "no_leader")), 4);
        assert_eq!(code(api(500, "internal")), 4);
        assert_eq!(
            code(E::Transport {
                endpoint: "e".into(),
                message: "refused".into()
            }),
            4
        );
        assert_eq!(
            code(E::Indeterminate {
                message: "lost".into()
            }),
            5
        );
        assert_eq!(code(E::InvalidArgument("empty key".into())), 2);
        assert_eq!(code(E::Decode("junk".into())), 3);
    }

    #[test]
    fn json_documents_only_for_errors_without_a_result() {
        assert!(CliError::NotFound("x".into()).json_document().is_none());
        assert!(CliError::Usage("x".into()).json_document().is_none());
        let Some(doc) = CliError::Unavailable("down".into()).json_document() else {
            panic!("no document for exit 4");
        };
        assert_eq!(doc["error"]["kind"], "unavailable");
        assert_eq!(doc["error"]["exit_code"], 4);
        let doc = CliError::from(api(400, "invalid_key")).json_document();
        assert_eq!(
            doc.map(|d| d["error"]["code"].clone()),
            Some(json!("invalid_key"))
        );
    }

    #[test]
    fn indeterminate_message_says_what_to_do() {
        let m = CliError::Indeterminate("timed out".into()).message();
        assert!(m.contains("may or may not"), "{m}");
    }
}
