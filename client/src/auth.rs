//! Tokens and roles (`/v1/auth/...`, admin only): create, list, revoke.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use tracing::instrument;

use crate::client::{decode, Client};
use crate::error::Result;
use crate::transport::{Call, Kind};

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TokenInfo {
    /// The id, used to revoke it.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Expiry, ms since the Unix epoch.
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

/// Answer to [`Client::create_token`]: the only time the secret is shown.
#[derive(Clone, Deserialize)]
pub struct CreatedToken {
    /// The secret, to send as a bearer token.
    pub token: String,
    /// What the cluster stores of it.
    #[serde(flatten)]
    pub info: TokenInfo,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// A role: built in (`admin`, `writer`, `reader`) or custom.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RoleInfo {
    /// Its name.
    pub name: String,
    /// `admin`, `writer` or `reader`.
    pub kind: String,
    /// Key prefixes it applies to (`""` is every key).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Whether it is built in.
    #[serde(default)]
    pub builtin: bool,
}

#[derive(Deserialize)]
struct TokenList {
    tokens: Vec<TokenInfo>,
}

#[derive(Deserialize)]
struct RoleList {
    roles: Vec<RoleInfo>,
}

/// One path segment, percent-encoded.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    async fn auth_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<serde_json::Value>,
        kind: Kind,
    ) -> Result<T> {
        let call = Call {
            method,
            target,
            body: body.map(|b| ("application/json", b.to_string().into_bytes())),
            kind,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }

    /// Creates a token for `role`, expiring after `ttl_secs` if given.
    #[instrument(skip(self), level = "debug")]
    pub async fn create_token(&self, role: &str, ttl_secs: Option<u64>) -> Result<CreatedToken> {
        let mut body = serde_json::json!({ "role": role });
        if let Some(ttl) = ttl_secs {
            body["ttl_secs"] = ttl.into();
        }
        self.auth_call(
            Method::POST,
            "/v1/auth/tokens".into(),
            Some(body),
            Kind::Write,
        )
        .await
    }

    /// Every token (ids, roles, times; no secrets).
    #[instrument(skip(self), level = "debug")]
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let list: TokenList = self
            .auth_call(Method::GET, "/v1/auth/tokens".into(), None, Kind::Read)
            .await?;
        Ok(list.tokens)
    }

    /// Revokes the token `id`.
    #[instrument(skip(self), level = "debug")]
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let target = format!("/v1/auth/tokens/{}", encode(id));
        let _: serde_json::Value = self
            .auth_call(Method::DELETE, target, None, Kind::Write)
            .await?;
        Ok(())
    }

    /// Creates a custom role of `kind` (`admin`, `writer`, `reader`) over
    /// `prefixes`.
    #[instrument(skip(self), level = "debug")]
    pub async fn create_role(
        &self,
        name: &str,
        kind: &str,
        prefixes: &[String],
    ) -> Result<RoleInfo> {
        let body = serde_json::json!({ "name": name, "kind": kind, "prefixes": prefixes });
        self.auth_call(
            Method::POST,
            "/v1/auth/roles".into(),
            Some(body),
            Kind::Write,
        )
        .await
    }

    /// Every role, built-in ones first.
    #[instrument(skip(self), level = "debug")]
    pub async fn list_roles(&self) -> Result<Vec<RoleInfo>> {
        let list: RoleList = self
            .auth_call(Method::GET, "/v1/auth/roles".into(), None, Kind::Read)
            .await?;
        Ok(list.roles)
    }

    /// Deletes the custom role `name` (refused while tokens use it).
    #[instrument(skip(self), level = "debug")]
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        let target = format!("/v1/auth/roles/{}", encode(name));
        let _: serde_json::Value = self
            .auth_call(Method::DELETE, target, None, Kind::Write)
            .await?;
        Ok(())
    }
}
