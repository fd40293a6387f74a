//! `ballastctl get`: one key, or a prefix with `--limit`.
//!
//! The API has no continuation key yet, so a prefix read is one request; a
//! spinner shows while a large one is in flight.

use ballast_client::{Consistency, GetResponse, RangeOptions, RangeResponse, ReadOptions};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{GetArgs, OutputFormat};
use crate::exit::CliError;
use crate::output::{json_bytes, kv_json, kvs_json, kvs_table};
use crate::progress::with_spinner;

/// Runs `get`.
pub async fn run(ctx: &Ctx, args: GetArgs) -> Result<Outcome, CliError> {
    if args.value_only && ctx.format() == OutputFormat::Json {
        return Err(CliError::Usage(
            "--value-only prints raw bytes and cannot be combined with --output json".to_owned(),
        ));
    }
    let consistency = if args.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    let client = ctx.client()?;
    if args.prefix {
        let options = RangeOptions {
            limit: args.limit,
            revision: args.revision,
            consistency,
        };
        let resp = with_spinner(
            format!("reading keys under {:?}", args.key),
            client.range(&args.key, options),
        )
        .await?;
        return Ok(render_range(ctx.format(), &resp));
    }
    let options = ReadOptions {
        consistency,
        revision: args.revision,
    };
    let resp = with_spinner(
        format!("reading {:?}", args.key),
        client.get_with(&args.key, options),
    )
    .await?;
    Ok(render_get(ctx.format(), &args.key, &resp, args.value_only))
}

/// Output of a single-key read; a missing key exits 1.
pub fn render_get(
    format: OutputFormat,
    key: &str,
    resp: &GetResponse,
    value_only: bool,
) -> Outcome {
    let stdout = match (format, &resp.kv) {
        (OutputFormat::Json, kv) => json_bytes(&json!({
            "revision": resp.revision,
            "kv": kv.as_ref().map(kv_json),
        })),
        (OutputFormat::Table, Some(kv)) if value_only => kv.value.clone(),
        (OutputFormat::Table, Some(kv)) => kvs_table(std::slice::from_ref(kv)).into_bytes(),
        (OutputFormat::Table, None) => Vec::new(),
    };
    match resp.kv {
        Some(_) => Outcome::ok(stdout),
        None => Outcome::fail(
            stdout,
            CliError::NotFound(format!(
                "key {key:?} not found (at revision {})",
                resp.revision
            )),
        ),
    }
}

/// Output of a prefix read (an empty result is not an error).
pub fn render_range(format: OutputFormat, resp: &RangeResponse) -> Outcome {
    match format {
        OutputFormat::Json => Outcome::ok(json_bytes(&json!({
            "revision": resp.revision,
            "kvs": kvs_json(&resp.kvs),
            "more": resp.more,
        }))),
        OutputFormat::Table => {
            let mut text = kvs_table(&resp.kvs);
            let n = resp.kvs.len();
            let noun = if n == 1 { "key" } else { "keys" };
            text.push_str(&format!("({n} {noun} at revision {}", resp.revision));
            if resp.more {
                text.push_str("; more keys exist, raise --limit");
            }
            text.push_str(")\n");
            Outcome::ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_kv;

    #[test]
    fn one_key() {
        let resp = GetResponse {
            revision: 9,
            kv: Some(test_kv("app/mode", b"green")),
        };
        let out = render_get(OutputFormat::Table, "app/mode", &resp, true);
        assert_eq!(out, Outcome::ok(b"green".to_vec()));
        let out = render_get(OutputFormat::Table, "app/mode", &resp, false);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("KEY"));
        let out = render_get(OutputFormat::Json, "app/mode", &resp, false);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc["kv"]["value"], "green");
        assert_eq!(doc["revision"], 9);
    }

    #[test]
    fn missing_key_exits_1_with_a_document_in_json() {
        let resp = GetResponse {
            revision: 4,
            kv: None,
        };
        let out = render_get(OutputFormat::Json, "nope", &resp, false);
        assert_eq!(out.error.as_ref().map(CliError::code), Some(1));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc, serde_json::json!({"revision": 4, "kv": null}));
        let out = render_get(OutputFormat::Table, "nope", &resp, false);
        assert!(out.stdout.is_empty());
        assert_eq!(out.error.as_ref().map(CliError::code), Some(1));
    }

    #[test]
    fn range_footer_says_when_more_exist() {
        let resp = RangeResponse {
            revision: 7,
            kvs: vec![test_kv("a/1", b"x"), test_kv("a/2", b"y")],
            more: true,
        };
        let out = render_range(OutputFormat::Table, &resp);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.ends_with("(2 keys at revision 7; more keys exist, raise --limit)\n"),
            "{text}"
        );
        let out = render_range(OutputFormat::Json, &resp);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc["more"], true);
        assert_eq!(doc["kvs"][1]["key"], "a/2");
    }
}
