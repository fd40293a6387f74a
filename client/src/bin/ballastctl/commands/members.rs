//! `ballastctl members list|add|promote|remove` and `ballastctl leader
//! transfer --to N`: membership and leadership, through any node (it forwards
//! to the leader). A refused change exits 3 with the server's code
//! (`learner_not_ready`, `would_lose_quorum`, `change_in_progress`, ...).

use ballast_client::{MembersView, TransferResponse};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{LeaderTransferArgs, MembersCommand, OutputFormat};
use crate::exit::CliError;
use crate::output::{json_bytes, Table};
use crate::progress::with_spinner;

/// Runs `members ...`.
pub async fn run(ctx: &Ctx, command: MembersCommand) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let (view, done) = match command {
        MembersCommand::List => (
            with_spinner("asking the leader", client.members()).await?,
            None,
        ),
        MembersCommand::Add(args) => (
            with_spinner(
                format!("adding node {} as a learner", args.id),
                client.add_learner(args.id, &args.client_addr, &args.peer_addr),
            )
            .await?,
            Some(format!("node {} added as a learner", args.id)),
        ),
        MembersCommand::Promote(args) => (
            with_spinner(
                format!("promoting node {}", args.id),
                client.promote(args.id),
            )
            .await?,
            Some(format!("node {} is a voter", args.id)),
        ),
        MembersCommand::Remove(args) => (
            with_spinner(
                format!("removing node {}", args.id),
                client.remove_member(args.id),
            )
            .await?,
            Some(format!("node {} removed", args.id)),
        ),
    };
    Ok(Outcome::ok(render(ctx.format(), done.as_deref(), &view)))
}

/// Runs `leader transfer --to N`.
pub async fn transfer(ctx: &Ctx, args: LeaderTransferArgs) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let resp = with_spinner(
        format!("handing leadership to node {}", args.to),
        client.transfer_leader(args.to),
    )
    .await?;
    Ok(Outcome::ok(render_transfer(ctx.format(), &resp)))
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The member table (after a change, a line saying what changed first).
pub fn render(format: OutputFormat, done: Option<&str>, view: &MembersView) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({
            "leader": view.leader,
            "term": view.term,
            "last_log_index": view.last_log_index,
            "membership_log_index": view.membership_log_index,
            "members": view.members.iter().map(|m| json!({
                "id": m.id, "role": m.role, "client_addr": m.client_addr,
                "peer_addr": m.peer_addr, "match_index": m.match_index, "lag": m.lag,
                "last_ack_ms": m.last_ack_ms, "healthy": m.healthy,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut text = done.map(|d| format!("{d}\n")).unwrap_or_default();
            let mut t = Table::new(&[
                "ID", "ROLE", "CLIENT", "PEER", "MATCH", "LAG", "ACK_MS", "HEALTHY",
            ]);
            for m in &view.members {
                t.row(vec![
                    m.id.to_string(),
                    m.role.clone(),
                    m.client_addr.clone(),
                    m.peer_addr.clone(),
                    opt(m.match_index),
                    opt(m.lag),
                    opt(m.last_ack_ms),
                    if m.healthy { "yes" } else { "no" }.to_string(),
                ]);
            }
            text.push_str(&t.render());
            text.into_bytes()
        }
    }
}

/// Output of a leader transfer.
pub fn render_transfer(format: OutputFormat, resp: &TransferResponse) -> Vec<u8> {
    match format {
        OutputFormat::Json => json_bytes(&json!({ "leader": resp.leader, "term": resp.term })),
        OutputFormat::Table => {
            format!("node {} is the leader (term {})\n", resp.leader, resp.term).into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_client::MemberInfo;

    fn view() -> MembersView {
        MembersView {
            leader: 1,
            term: 3,
            last_log_index: 40,
            membership_log_index: 7,
            members: vec![
                MemberInfo {
                    id: 1,
                    client_addr: "a:1".into(),
                    peer_addr: "a:2".into(),
                    role: "leader".into(),
                    match_index: Some(40),
                    lag: Some(0),
                    last_ack_ms: None,
                    healthy: true,
                },
                MemberInfo {
                    id: 4,
                    client_addr: "d:1".into(),
                    peer_addr: "d:2".into(),
                    role: "learner".into(),
                    match_index: None,
                    lag: None,
                    last_ack_ms: None,
                    healthy: false,
                },
            ],
        }
    }

    #[test]
    fn renders_a_table_and_json() {
        let text = String::from_utf8(render(OutputFormat::Table, Some("node 4 added"), &view()))
            .expect("utf8");
        assert!(text.starts_with("node 4 added\nID"), "{text}");
        assert!(text.contains("learner"), "{text}");
        let line4 = text.lines().find(|l| l.starts_with('4')).expect("row 4");
        assert!(line4.contains(" - ") && line4.ends_with("no"), "{line4}");
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, None, &view())).expect("json");
        assert_eq!(doc["members"][1]["match_index"], serde_json::Value::Null);
        assert_eq!(doc["leader"], 1);
        assert_eq!(
            render_transfer(
                OutputFormat::Table,
                &TransferResponse { leader: 2, term: 9 }
            ),
            b"node 2 is the leader (term 9)\n"
        );
    }
}
