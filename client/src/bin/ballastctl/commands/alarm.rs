//! `ballastctl alarm list|disarm`: the cluster's active alarms.

use ballast_client::{AlarmInfo, AlarmsResponse};
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{AlarmCommand, OutputFormat};
use crate::exit::CliError;
use crate::output::json_bytes;
use crate::progress::with_spinner;

/// Runs `alarm list` or `alarm disarm`.
pub async fn run(ctx: &Ctx, command: AlarmCommand) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let resp = match command {
        AlarmCommand::List => client.alarms().await?,
        AlarmCommand::Disarm(args) => {
            with_spinner(
                "disarming alarms".to_string(),
                client.disarm(args.member, args.alarm.as_deref()),
            )
            .await?
        }
    };
    Ok(Outcome::ok(render(ctx.format(), &resp)))
}

fn rows(alarms: &[AlarmInfo]) -> Vec<serde_json::Value> {
    alarms
        .iter()
        .map(|a| json!({ "member": a.member, "alarm": a.alarm }))
        .collect()
}

/// Output of `alarm list` and `alarm disarm`.
pub fn render(format: OutputFormat, resp: &AlarmsResponse) -> Vec<u8> {
    match format {
        OutputFormat::Json => {
            let mut doc = json!({ "alarms": rows(&resp.alarms) });
            if let Some(disarmed) = &resp.disarmed {
                doc["disarmed"] = json!(rows(disarmed));
            }
            json_bytes(&doc)
        }
        OutputFormat::Table => {
            let mut out = String::new();
            if let Some(disarmed) = &resp.disarmed {
                out.push_str(&format!("disarmed {} alarm(s)\n", disarmed.len()));
            }
            if resp.alarms.is_empty() {
                out.push_str("no active alarms\n");
            } else {
                out.push_str(&format!("{:<8} {}\n", "MEMBER", "ALARM"));
                for a in &resp.alarms {
                    out.push_str(&format!("{:<8} {}\n", a.member, a.alarm));
                }
            }
            out.into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nospace(member: u64) -> AlarmInfo {
        AlarmInfo {
            member,
            alarm: "nospace".into(),
        }
    }

    #[test]
    fn renders_lists_and_disarms() {
        let listed = AlarmsResponse {
            alarms: vec![nospace(3)],
            disarmed: None,
        };
        assert_eq!(
            render(OutputFormat::Table, &listed),
            b"MEMBER   ALARM\n3        nospace\n"
        );
        let disarmed = AlarmsResponse {
            alarms: vec![],
            disarmed: Some(vec![nospace(3)]),
        };
        assert_eq!(
            render(OutputFormat::Table, &disarmed),
            b"disarmed 1 alarm(s)\nno active alarms\n"
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&render(OutputFormat::Json, &disarmed)).unwrap_or_default();
        assert_eq!(doc["disarmed"][0]["member"], 3);
        assert_eq!(doc["alarms"], json!([]));
    }
}
