//! `ballastctl del`: one key, or every key under a prefix. Deleting nothing
//! is not an error (`deleted 0`).

use ballast_client::{DeleteOptions, DeleteResponse};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{DelArgs, OutputFormat};
use crate::exit::CliError;
use crate::output::{json_bytes, kvs_json, kvs_table};
use crate::progress::with_spinner;

/// Runs `del`.
pub async fn run(ctx: &Ctx, args: DelArgs) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let options = DeleteOptions {
        prefix: args.prefix,
        prev_kv: args.prev_kv,
    };
    let what = if args.prefix { "keys under " } else { "" };
    let resp = with_spinner(
        format!("deleting {what}{:?}", args.key),
        client.delete_with(&args.key, options),
    )
    .await?;
    Ok(Outcome::ok(render(ctx.format(), &resp, args.prev_kv)))
}

/// Output of a delete; `prev_kv` says whether the deleted keys were asked for.
pub fn render(format: OutputFormat, resp: &DeleteResponse, prev_kv: bool) -> Vec<u8> {
    match format {
        OutputFormat::Json => {
            let mut doc = json!({ "revision": resp.revision, "deleted": resp.deleted });
            if prev_kv {
                doc["prev_kvs"] = kvs_json(&resp.prev_kvs);
            }
            json_bytes(&doc)
        }
        OutputFormat::Table => {
            let mut text = format!("deleted {} (revision {})\n", resp.deleted, resp.revision);
            if prev_kv && !resp.prev_kvs.is_empty() {
                text.push_str(&kvs_table(&resp.prev_kvs));
            }
            text.into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_kv;

    #[test]
    fn renders() {
        let resp = DeleteResponse {
            revision: 14,
            deleted: 2,
            prev_kvs: vec![test_kv("a/1", b"x"), test_kv("a/2", b"y")],
        };
        assert_eq!(
            render(OutputFormat::Table, &resp, false),
            b"deleted 2 (revision 14)\n"
        );
        let text = String::from_utf8_lossy(&render(OutputFormat::Table, &resp, true)).into_owned();
        assert!(text.contains("a/2"), "{text}");
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &resp, true)).unwrap_or_default();
        assert_eq!(doc["deleted"], 2);
        assert_eq!(doc["prev_kvs"][0]["key"], "a/1");
    }
}
