//! `ferry activation-code …`: SMC access tokens, and the command an operator pastes on a source server.

use serde_json::Value;

use super::Session;
use crate::cli::ActivationCodeCommand;
use crate::output::{Table, key_values};
use crate::view::{list, text, time};

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: ActivationCodeCommand) -> anyhow::Result<()> {
    match cmd {
        ActivationCodeCommand::Create {
            name,
            count,
            ttl_days,
        } => {
            let mut params = Vec::new();
            if let Some(n) = name {
                params.push(("Name".to_owned(), n));
            }
            if let Some(c) = count {
                params.push(("Count".to_owned(), c.to_string()));
            }
            if let Some(t) = ttl_days {
                params.push(("TimeToLiveInDays".to_owned(), t.to_string()));
            }
            let resp = s.client.smc("CreateAccessToken", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let id = text(&resp, "AccessTokenId");
            let code = text(&resp, "AccessTokenCode");
            let command = agent_command(
                s.client.endpoint(),
                &code,
                s.resolved.ca_fingerprint.as_deref(),
            );
            let mut out = key_values(
                &[
                    ("Activation code ID", id),
                    ("Code", format!("{code}  (shown only now: keep it safe)")),
                ],
                0,
            );
            out.push_str("\nRun this on each source server, as root:\n\n  ");
            out.push_str(&command);
            out.push_str(
                "\n\nthen start the agent: `systemctl enable --now ferry-agent` (unit in dist/), or add --run \
                 to the command above. Add --disk /dev/sdX per disk to choose them (default: all disks).\n",
            );
            if s.resolved.ca_fingerprint.is_none() {
                out.push_str(
                    "\nwarning: the CA fingerprint is unknown (no --ca-cert): add --ca-fingerprint with the \
                     value `ferry server` printed\n",
                );
            }
            s.print(&out)
        }
        ActivationCodeCommand::List => {
            let resp = s.client.smc("ListAccessTokens", &[]).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let items = list(&resp, "AccessTokens", "AccessToken");
            if items.is_empty() {
                return s.print(
                    "No activation codes. Create one with `ferry activation-code create`.\n",
                );
            }
            s.print(&tokens_table(items).render())
        }
        ActivationCodeCommand::Disable { id } => {
            let resp = s
                .client
                .smc(
                    "DisableAccessToken",
                    &[("AccessTokenId".to_owned(), id.clone())],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Disabled activation code {id}: it registers no new source servers (registered ones are \
                 unaffected).\n"
            ))
        }
        ActivationCodeCommand::Delete { id } => {
            let resp = s
                .client
                .smc(
                    "DeleteAccessToken",
                    &[("AccessTokenId".to_owned(), id.clone())],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Deleted activation code {id}.\n"))
        }
    }
}

/// The command that activates an agent against this server.
pub fn agent_command(endpoint: &str, code: &str, ca_fingerprint: Option<&str>) -> String {
    let mut cmd = format!("ferry-agent activate --server {endpoint} --code {code}");
    if let Some(fp) = ca_fingerprint {
        cmd.push_str(" --ca-fingerprint ");
        cmd.push_str(fp);
    }
    cmd
}

fn tokens_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATUS",
        "USED",
        "TTL",
        "CREATED",
        "DESCRIPTION",
    ]);
    for i in items {
        t.row(vec![
            text(i, "AccessTokenId"),
            text(i, "Name"),
            text(i, "Status"),
            format!("{}/{}", text(i, "RegisteredCount"), text(i, "Count")),
            format!("{}d", text(i, "TimeToLiveInDays")),
            time(i, "CreationTime"),
            text(i, "Description"),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agent_command_carries_the_fingerprint() {
        assert_eq!(
            agent_command("https://h:8443", "CODE", Some("sha256:ab")),
            "ferry-agent activate --server https://h:8443 --code CODE --ca-fingerprint sha256:ab"
        );
        assert!(!agent_command("https://h", "C", None).contains("fingerprint"));
    }

    #[test]
    fn tokens_render_as_a_table() {
        let items = [json!({
            "AccessTokenId": "at-1", "Name": "wave-1", "Status": "unactivated", "Count": "100",
            "RegisteredCount": "2", "TimeToLiveInDays": "30", "CreationTime": "2024-05-01T10:00:00Z",
            "Description": ""
        })];
        let text = tokens_table(&items).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID    NAME    STATUS"), "{text}");
        assert!(
            lines[1].contains("at-1  wave-1  unactivated  2/100  30d  2024-05-01 10:00:00"),
            "{text}"
        );
    }
}
