//! `ballastctl auth token create|list|revoke` and `ballastctl auth role
//! create|list|delete`: tokens and roles, with an admin `--token`. A created
//! token's secret is printed once (stdout only); listings never hold one.

use ballast_client::{CreatedToken, RoleInfo, TokenInfo};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{AuthCommand, OutputFormat, RoleCommand, TokenCommand};
use crate::exit::CliError;
use crate::output::{json_bytes, Table};

/// Runs `auth ...`.
pub async fn run(ctx: &Ctx, command: AuthCommand) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let format = ctx.format();
    let out = match command {
        AuthCommand::Token(TokenCommand::Create(args)) => {
            let ttl = args.ttl.map(|d| d.as_secs().max(1));
            render_created(format, &client.create_token(&args.role, ttl).await?)
        }
        AuthCommand::Token(TokenCommand::List) => {
            render_tokens(format, &client.list_tokens().await?)
        }
        AuthCommand::Token(TokenCommand::Revoke(args)) => {
            client.revoke_token(&args.id).await?;
            done(
                format,
                json!({ "revoked": args.id }),
                format!("token {} revoked\n", args.id),
            )
        }
        AuthCommand::Role(RoleCommand::Create(args)) => {
            let role = client
                .create_role(&args.name, &args.kind, &args.prefixes)
                .await?;
            render_roles(format, &[role])
        }
        AuthCommand::Role(RoleCommand::List) => render_roles(format, &client.list_roles().await?),
        AuthCommand::Role(RoleCommand::Delete(args)) => {
            client.delete_role(&args.name).await?;
            done(
                format,
                json!({ "deleted": args.name }),
                format!("role {} deleted\n", args.name),
            )
        }
    };
    Ok(Outcome::ok(out))
}

fn done(format: OutputFormat, doc: serde_json::Value, text: String) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&doc),
        OutputFormat::Table => text.into_bytes(),
    }
}

fn expiry(t: &TokenInfo) -> String {
    t.expires_ms
        .map_or_else(|| "never".to_owned(), |e| e.to_string())
}

/// Output of `auth token create`: the secret, once.
pub fn render_created(format: OutputFormat, created: &CreatedToken) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({
            "token": created.token,
            "id": created.info.id,
            "role": created.info.role,
            "created_ms": created.info.created_ms,
            "expires_ms": created.info.expires_ms,
        })),
        OutputFormat::Table => format!(
            "{}\ntoken {} (role {}, expires {}); the secret above is not shown again\n",
            created.token,
            created.info.id,
            created.info.role,
            expiry(&created.info)
        )
        .into_bytes(),
    }
}

/// Output of `auth token list`.
pub fn render_tokens(format: OutputFormat, tokens: &[TokenInfo]) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({ "tokens": tokens })),
        OutputFormat::Table => {
            let mut t = Table::new(&["ID", "ROLE", "CREATED_MS", "EXPIRES_MS"]);
            for token in tokens {
                t.row(vec![
                    token.id.clone(),
                    token.role.clone(),
                    token.created_ms.to_string(),
                    expiry(token),
                ]);
            }
            t.render().into_bytes()
        }
    }
}

/// Output of `auth role create|list`.
pub fn render_roles(format: OutputFormat, roles: &[RoleInfo]) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({ "roles": roles })),
        OutputFormat::Table => {
            let mut t = Table::new(&["NAME", "KIND", "PREFIXES", "BUILTIN"]);
            for role in roles {
                let prefixes: Vec<String> =
                    role.prefixes.iter().map(|p| format!("{p:?}")).collect();
                t.row(vec![
                    role.name.clone(),
                    role.kind.clone(),
                    prefixes.join(","),
                    role.builtin.to_string(),
                ]);
            }
            t.render().into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_render() {
        let tokens = [TokenInfo {
            id: "ab12".into(),
            role: "app".into(),
            created_ms: 5,
            expires_ms: None,
        }];
        let table =
            String::from_utf8(render_tokens(OutputFormat::Table, &tokens)).unwrap_or_default();
        assert!(table.contains("ab12") && table.contains("never"), "{table}");
        let roles = [RoleInfo {
            name: "app".into(),
            kind: "writer".into(),
            prefixes: vec!["app/".into()],
            builtin: false,
        }];
        let doc: serde_json::Value =
            serde_json::from_slice(&render_roles(OutputFormat::Json, &roles)).unwrap_or_default();
        assert_eq!(doc["roles"][0]["prefixes"][0], "app/");
    }
}
