//! `ballastctl cas`: compare-and-swap of one key, as one transaction. Exits 1
//! when the key did not hold the expected value; the output then shows what it
//! held.

use ballast_client::CasResult;
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{CasArgs, OutputFormat};
use crate::exit::CliError;
use crate::output::{json_bytes, kv_json, kvs_table};
use crate::progress::with_spinner;

/// Runs `cas`.
pub async fn run(ctx: &Ctx, args: CasArgs) -> Result<Outcome, CliError> {
    let expected = match (args.expect, args.absent) {
        (Some(v), false) => Some(v.into_encoded_bytes()),
        (None, true) => None,
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --expect VALUE and --absent".to_owned(),
            ))
        }
    };
    let client = ctx.client()?;
    let resp = with_spinner(
        format!("compare-and-swap of {:?}", args.key),
        client.compare_and_swap(
            &args.key,
            expected.as_deref(),
            args.new_value.into_encoded_bytes(),
        ),
    )
    .await?;
    Ok(render(ctx.format(), &args.key, expected.is_none(), &resp))
}

/// Output of a compare-and-swap; `absent` says whether the expectation was
/// "the key does not exist".
pub fn render(format: OutputFormat, key: &str, absent: bool, resp: &CasResult) -> Outcome {
    let stdout = match format {
        OutputFormat::Json => json_bytes(&json!({
            "succeeded": resp.succeeded,
            "revision": resp.revision,
            "current": resp.current.as_ref().map(kv_json),
        })),
        OutputFormat::Table if resp.succeeded => {
            format!("OK (revision {})\n", resp.revision).into_bytes()
        }
        OutputFormat::Table => match &resp.current {
            Some(kv) => kvs_table(std::slice::from_ref(kv)),
            None => "(the key does not exist)\n".to_owned(),
        }
        .into_bytes(),
    };
    if resp.succeeded {
        return Outcome::ok(stdout);
    }
    let why = match (&resp.current, absent) {
        (Some(_), true) => "it already exists",
        (Some(_), false) => "it holds a different value",
        (None, _) => "it does not exist",
    };
    Outcome::fail(
        stdout,
        CliError::CompareFailed(format!(
            "cas: {key:?} was not changed: {why} (revision {})",
            resp.revision
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_kv;

    #[test]
    fn success_and_failure() {
        let ok = CasResult {
            succeeded: true,
            revision: 20,
            current: None,
        };
        assert_eq!(
            render(OutputFormat::Table, "k", false, &ok),
            Outcome::ok("OK (revision 20)\n")
        );
        let failed = CasResult {
            succeeded: false,
            revision: 20,
            current: Some(test_kv("k", b"other")),
        };
        let out = render(OutputFormat::Table, "k", false, &failed);
        assert!(String::from_utf8_lossy(&out.stdout).contains("other"));
        assert_eq!(
            out.error,
            Some(CliError::CompareFailed(
                "cas: \"k\" was not changed: it holds a different value (revision 20)".to_owned()
            ))
        );
        let out = render(OutputFormat::Json, "k", true, &failed);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc["current"]["value"], "other");
        assert!(out
            .error
            .is_some_and(|e| e.message().contains("already exists")));
    }
}
