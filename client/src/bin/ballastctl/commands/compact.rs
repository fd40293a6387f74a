//! `ballastctl compact REV`: forget history before a revision.

use ballast_client::CompactResponse;
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{CompactArgs, OutputFormat};
use crate::exit::CliError;
use crate::output::json_bytes;
use crate::progress::with_spinner;

/// Runs `compact`.
pub async fn run(ctx: &Ctx, args: CompactArgs) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let resp = with_spinner(
        format!("compacting up to revision {}", args.revision),
        client.compact(args.revision),
    )
    .await?;
    Ok(Outcome::ok(render(ctx.format(), &resp)))
}

/// Output of a compaction.
pub fn render(format: OutputFormat, resp: &CompactResponse) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({
            "revision": resp.revision,
            "compact_revision": resp.compact_revision,
        })),
        OutputFormat::Table => format!(
            "compacted up to revision {} (current revision {})\n",
            resp.compact_revision, resp.revision
        )
        .into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let resp = CompactResponse {
            revision: 20,
            compact_revision: 12,
        };
        assert_eq!(
            render(OutputFormat::Table, &resp),
            b"compacted up to revision 12 (current revision 20)\n"
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &resp)).unwrap_or_default();
        assert_eq!(doc["compact_revision"], 12);
    }
}
