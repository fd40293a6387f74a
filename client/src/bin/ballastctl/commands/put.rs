//! `ballastctl put`: the value from the argument, `--file`, or stdin.

use std::ffi::OsString;
use std::path::PathBuf;

use ballast_client::{PutOptions, PutResponse};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, PutArgs};
use crate::exit::CliError;
use crate::input::{read_all, stdin_is_terminal, Source};
use crate::output::{json_bytes, kv_json, kvs_table};
use crate::progress::with_spinner;

/// Where `put` takes its value from.
#[derive(Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// The VALUE argument's bytes.
    Arg(Vec<u8>),
    /// `--file PATH`.
    File(PathBuf),
    /// Standard input (`-`, or no VALUE with stdin not a terminal).
    Stdin,
}

/// Decides the value source; `stdin_tty` says whether stdin is a terminal
/// (then it is read only when asked for with `-`).
pub fn value_source(
    value: Option<OsString>,
    file: Option<PathBuf>,
    stdin_tty: bool,
) -> Result<ValueSource, CliError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "give the value as an argument or with --file, not both".to_owned(),
        )),
        (Some(v), None) if v == "-" => Ok(ValueSource::Stdin),
        (Some(v), None) => Ok(ValueSource::Arg(v.into_encoded_bytes())),
        (None, Some(path)) => Ok(ValueSource::File(path)),
        (None, None) if stdin_tty => Err(CliError::Usage(
            "no value: give VALUE, --file PATH, or pipe the value on stdin".to_owned(),
        )),
        (None, None) => Ok(ValueSource::Stdin),
    }
}

/// Runs `put`.
pub async fn run(ctx: &Ctx, args: PutArgs) -> Result<Outcome, CliError> {
    let value = match value_source(args.value, args.file, stdin_is_terminal())? {
        ValueSource::Arg(bytes) => bytes,
        ValueSource::File(path) => read_all(Source::File(&path)).await?,
        ValueSource::Stdin => read_all(Source::Stdin).await?,
    };
    let client = ctx.client()?;
    let options = PutOptions {
        prev_kv: args.prev_kv,
    };
    let resp = with_spinner(
        format!("writing {} bytes to {:?}", value.len(), args.key),
        client.put_with(&args.key, value, options),
    )
    .await?;
    Ok(Outcome::ok(render(ctx.format(), &resp, args.prev_kv)))
}

/// Output of a put; `prev_kv` says whether the previous value was asked for.
pub fn render(format: OutputFormat, resp: &PutResponse, prev_kv: bool) -> Vec<u8> {
    match format {
        OutputFormat::Json => {
            let mut doc = json!({ "revision": resp.revision });
            if prev_kv {
                doc["prev_kv"] = resp.prev_kv.as_ref().map(kv_json).into();
            }
            json_bytes(&doc)
        }
        OutputFormat::Table => {
            let mut text = format!("OK (revision {})\n", resp.revision);
            if prev_kv {
                match &resp.prev_kv {
                    Some(kv) => text.push_str(&kvs_table(std::slice::from_ref(kv))),
                    None => text.push_str("(no previous value)\n"),
                }
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
    fn value_sources() {
        let v = |s: &str| Some(OsString::from(s));
        assert_eq!(
            value_source(v("green"), None, true),
            Ok(ValueSource::Arg(b"green".to_vec()))
        );
        assert_eq!(value_source(v("-"), None, true), Ok(ValueSource::Stdin));
        assert_eq!(value_source(None, None, false), Ok(ValueSource::Stdin));
        assert_eq!(
            value_source(None, Some("f".into()), false),
            Ok(ValueSource::File("f".into()))
        );
        assert!(matches!(
            value_source(None, None, true),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            value_source(v("x"), Some("f".into()), false),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn renders() {
        let resp = PutResponse {
            revision: 12,
            prev_kv: Some(test_kv("k", b"old")),
        };
        assert_eq!(
            render(OutputFormat::Table, &resp, false),
            b"OK (revision 12)\n"
        );
        let text = render(OutputFormat::Table, &resp, true);
        assert!(String::from_utf8_lossy(&text).contains("old"));
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &resp, true)).unwrap_or_default();
        assert_eq!(doc["prev_kv"]["value"], "old");
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &resp, false)).unwrap_or_default();
        assert!(doc.get("prev_kv").is_none());
        let none = PutResponse {
            revision: 1,
            prev_kv: None,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &none, true)).unwrap_or_default();
        assert!(doc["prev_kv"].is_null());
    }
}
