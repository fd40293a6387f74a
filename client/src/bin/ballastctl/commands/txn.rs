//! `ballastctl txn`: a JSON transaction document (the body of `POST /v1/txn`)
//! from `--file` or stdin. Exits 1 when the compare did not hold.

use ballast_client::{TxnOpResponse, TxnResponse};
use serde_json::{json, Value};

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, TxnArgs};
use crate::exit::CliError;
use crate::input::{read_all, stdin_is_terminal, Source};
use crate::output::{json_bytes, kvs_json, kvs_table};
use crate::progress::with_spinner;
use crate::txn_doc;

/// Runs `txn`.
pub async fn run(ctx: &Ctx, args: TxnArgs) -> Result<Outcome, CliError> {
    let bytes = match &args.file {
        Some(path) => read_all(Source::File(path)).await?,
        None if stdin_is_terminal() => {
            return Err(CliError::Usage(
                "no transaction: give --file PATH or pipe the JSON document on stdin".to_owned(),
            ))
        }
        None => read_all(Source::Stdin).await?,
    };
    let txn = txn_doc::parse(&bytes).map_err(CliError::Usage)?;
    let client = ctx.client()?;
    let resp = with_spinner("running the transaction", client.txn(txn)).await?;
    Ok(render(ctx.format(), &resp))
}

/// Output of a transaction; a failed compare exits 1.
pub fn render(format: OutputFormat, resp: &TxnResponse) -> Outcome {
    let stdout = match format {
        OutputFormat::Json => json_bytes(&json!({
            "succeeded": resp.succeeded,
            "revision": resp.revision,
            "responses": resp.responses.iter().map(op_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut text = if resp.succeeded {
                format!("succeeded (revision {})\n", resp.revision)
            } else {
                format!(
                    "compare failed, the failure branch ran (revision {})\n",
                    resp.revision
                )
            };
            for (i, op) in resp.responses.iter().enumerate() {
                match op {
                    TxnOpResponse::Put { revision } => {
                        text.push_str(&format!("[{i}] put: revision {revision}\n"));
                    }
                    TxnOpResponse::Delete { deleted } => {
                        text.push_str(&format!("[{i}] delete: {deleted} deleted\n"));
                    }
                    TxnOpResponse::Get { kvs } => {
                        let noun = if kvs.len() == 1 { "key" } else { "keys" };
                        text.push_str(&format!("[{i}] get: {} {noun}\n", kvs.len()));
                        if !kvs.is_empty() {
                            text.push_str(&kvs_table(kvs));
                        }
                    }
                }
            }
            text.into_bytes()
        }
    };
    if resp.succeeded {
        Outcome::ok(stdout)
    } else {
        Outcome::fail(
            stdout,
            CliError::CompareFailed(format!(
                "txn: the compare did not hold; the failure branch ran (revision {})",
                resp.revision
            )),
        )
    }
}

/// One op's result as the HTTP API writes it.
fn op_json(op: &TxnOpResponse) -> Value {
    match op {
        TxnOpResponse::Put { revision } => json!({ "put": { "revision": revision } }),
        TxnOpResponse::Delete { deleted } => json!({ "delete": { "deleted": deleted } }),
        TxnOpResponse::Get { kvs } => json!({ "get": { "kvs": kvs_json(kvs) } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_kv;

    #[test]
    fn succeeded_and_failed() {
        let ok = TxnResponse {
            succeeded: true,
            revision: 9,
            responses: vec![
                TxnOpResponse::Put { revision: 9 },
                TxnOpResponse::Delete { deleted: 1 },
            ],
        };
        let out = render(OutputFormat::Table, &ok);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "succeeded (revision 9)\n[0] put: revision 9\n[1] delete: 1 deleted\n"
        );
        assert!(out.error.is_none());
        let failed = TxnResponse {
            succeeded: false,
            revision: 9,
            responses: vec![TxnOpResponse::Get {
                kvs: vec![test_kv("app/mode", b"blue")],
            }],
        };
        let out = render(OutputFormat::Json, &failed);
        assert_eq!(out.error.as_ref().map(CliError::code), Some(1));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc["succeeded"], false);
        assert_eq!(doc["responses"][0]["get"]["kvs"][0]["value"], "blue");
    }
}
