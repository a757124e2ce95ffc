//! `ferry source …`: registered source servers, with their inventory and prechecks made readable.
//!
//! `DescribeSourceServers` carries Ferry's inventory and prechecks as JSON text (`Inventory`,
//! `Prechecks`, like SMC's `SystemInfo`); they are parsed into `ferry_types::inventory` here.

use ferry_types::inventory::{
    AddrConfig, BootMode, Disk, Filesystem, Inventory, PartitionTableType, Precheck,
};
use serde_json::Value;

use super::Session;
use crate::cli::SourceCommand;
use crate::client::SMC_VERSION;
use crate::output::{Table, human_bytes, human_duration, key_values};
use crate::view::{age_secs, list, text, time};

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: SourceCommand) -> anyhow::Result<()> {
    match cmd {
        SourceCommand::List => {
            let (doc, items) = s
                .fetch_all(
                    SMC_VERSION,
                    "DescribeSourceServers",
                    &[],
                    ("SourceServers", "SourceServer"),
                    50,
                )
                .await?;
            if s.json_output() {
                return s.print_json(&doc);
            }
            if items.is_empty() {
                return s.print(
                    "No source servers. Register one: create an activation code with \
                     `ferry activation-code create` and run the command it prints on the server.\n",
                );
            }
            let now = time::OffsetDateTime::now_utc();
            s.print(&sources_table(&items, now).render())
        }
        SourceCommand::Show { id } => {
            let resp = s
                .client
                .smc(
                    "DescribeSourceServers",
                    &[("SourceId.1".to_owned(), id.clone())],
                )
                .await?;
            let Some(source) = list(&resp, "SourceServers", "SourceServer")
                .iter()
                .find(|v| text(v, "SourceId") == id)
            else {
                anyhow::bail!(
                    "source server {id} does not exist: list source servers with `ferry source list`"
                );
            };
            if s.json_output() {
                return s.print_json(&resp);
            }
            let now = time::OffsetDateTime::now_utc();
            s.print(&render_source(source, now))
        }
        SourceCommand::Rename {
            id,
            name,
            description,
        } => {
            let mut params = vec![
                ("SourceId".to_owned(), id.clone()),
                ("Name".to_owned(), name.clone()),
            ];
            if let Some(d) = description {
                params.push(("Description".to_owned(), d));
            }
            let resp = s.client.smc("ModifySourceServerAttribute", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Renamed source server {id} to {name:?}.\n"))
        }
        SourceCommand::Delete { id, force } => {
            let resp = s
                .client
                .smc(
                    "DeleteSourceServer",
                    &[
                        ("SourceId".to_owned(), id.clone()),
                        ("Force".to_owned(), force.to_string()),
                    ],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let also = if force {
                " with its replication job"
            } else {
                ""
            };
            s.print(&format!(
                "Deleting source server {id}{also}. Its agent can no longer report: stop ferry-agent on \
                 that server, or activate it again with a new code.\n"
            ))
        }
    }
}

fn parse_inventory(source: &Value) -> Result<Inventory, String> {
    let raw = text(source, "Inventory");
    if raw.trim().is_empty() {
        return Err("the agent has not reported an inventory yet".to_owned());
    }
    serde_json::from_str(&raw).map_err(|e| format!("the inventory could not be read ({e})"))
}

fn parse_prechecks(source: &Value) -> Result<Vec<Precheck>, String> {
    let raw = text(source, "Prechecks");
    if raw.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&raw).map_err(|e| format!("the prechecks could not be read ({e})"))
}

fn heartbeat_age(source: &Value, now: time::OffsetDateTime) -> String {
    match age_secs(&text(source, "HeartbeatTime"), now) {
        Some(secs) if secs >= 0 => format!("{} ago", human_duration(secs as u64)),
        Some(_) => "just now".to_owned(),
        None => String::new(),
    }
}

fn sources_table(items: &[Value], now: time::OffsetDateTime) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATE",
        "OS",
        "ARCH",
        "DISKS",
        "AGENT",
        "HEARTBEAT",
        "JOB",
    ]);
    for v in items {
        let inv = parse_inventory(v).ok();
        let os = inv
            .as_ref()
            .map(os_name)
            .unwrap_or_else(|| text(v, "Platform"));
        let disks = inv
            .as_ref()
            .map(|i| {
                let total: u64 = i.disks.iter().map(|d| d.size_bytes).sum();
                format!("{} ({})", i.disks.len(), human_bytes(total))
            })
            .unwrap_or_default();
        t.row(vec![
            text(v, "SourceId"),
            text(v, "Name"),
            text(v, "State"),
            os,
            inv.as_ref()
                .map(|i| i.architecture.clone())
                .unwrap_or_else(|| text(v, "Architecture")),
            disks,
            text(v, "AgentVersion"),
            heartbeat_age(v, now),
            text(v, "JobId"),
        ]);
    }
    t
}

fn os_name(inv: &Inventory) -> String {
    if !inv.os.pretty_name.is_empty() {
        inv.os.pretty_name.clone()
    } else {
        format!("{} {}", inv.os.name, inv.os.version_id)
            .trim()
            .to_owned()
    }
}

fn fs_text(fs: Option<&Filesystem>) -> [String; 4] {
    match fs {
        Some(f) => [
            f.fs_type.clone(),
            f.mount_point.clone().unwrap_or_default(),
            f.label.clone().unwrap_or_default(),
            f.uuid.clone().unwrap_or_default(),
        ],
        None => Default::default(),
    }
}

fn render_disk(d: &Disk) -> String {
    let table = match d.partition_table {
        Some(PartitionTableType::Gpt) => "GPT",
        Some(PartitionTableType::Mbr) => "MBR",
        None => "no partition table",
    };
    let mut head = format!(
        "  Disk {}{}: {}, {}, {table}",
        d.index,
        if d.index == 0 { " (system)" } else { "" },
        d.path,
        human_bytes(d.size_bytes),
    );
    if let Some(m) = d.model.as_deref().filter(|m| !m.is_empty()) {
        head.push_str(", ");
        head.push_str(m);
    }
    head.push('\n');
    let mut t = Table::new(&[
        "PART",
        "START",
        "SIZE",
        "TYPE",
        "FILESYSTEM",
        "MOUNT POINT",
        "LABEL",
        "UUID",
    ]);
    for p in &d.partitions {
        let [fs, mount, label, uuid] = fs_text(p.filesystem.as_ref());
        t.row(vec![
            format!("{}{}", p.number, if p.bootable { "*" } else { "" }),
            human_bytes(p.start_bytes),
            human_bytes(p.size_bytes),
            p.type_id.clone(),
            fs,
            mount,
            label,
            uuid,
        ]);
    }
    if let Some(f) = &d.filesystem {
        let [fs, mount, label, uuid] = fs_text(Some(f));
        t.row(vec![
            "whole disk".to_owned(),
            String::new(),
            human_bytes(d.size_bytes),
            String::new(),
            fs,
            mount,
            label,
            uuid,
        ]);
    }
    if !t.is_empty() {
        for line in t.render().lines() {
            head.push_str("    ");
            head.push_str(line);
            head.push('\n');
        }
    }
    head
}

/// The readable description of one source server: summary, disks, network, prechecks.
pub fn render_source(source: &Value, now: time::OffsetDateTime) -> String {
    let mut out = format!(
        "Source server {} ({})\n",
        text(source, "SourceId"),
        text(source, "Name")
    );
    let mut state = text(source, "State");
    let info = text(source, "StatusInfo");
    if !info.is_empty() {
        state = format!("{state}: {info}");
    }
    let heartbeat = heartbeat_age(source, now);
    let mut summary = vec![
        ("State", state),
        ("Registered", time(source, "CreationTime")),
        (
            "Agent",
            format!(
                "{}{}",
                text(source, "AgentVersion"),
                if heartbeat.is_empty() {
                    String::new()
                } else {
                    format!(", last heartbeat {heartbeat}")
                }
            ),
        ),
        ("Job", text(source, "JobId")),
    ];
    let inv = parse_inventory(source);
    if let Ok(inv) = &inv {
        summary.extend([
            ("Hostname", inv.hostname.clone()),
            ("OS", os_name(inv)),
            ("Kernel", inv.kernel.clone()),
            ("Architecture", inv.architecture.clone()),
            (
                "Boot mode",
                match inv.boot_mode {
                    BootMode::Bios => "BIOS".to_owned(),
                    BootMode::Uefi => "UEFI".to_owned(),
                },
            ),
            ("CPUs", inv.cpus.to_string()),
            ("Memory", human_bytes(inv.memory_bytes)),
        ]);
    }
    out.push_str(&key_values(&summary, 2));
    let inv = match inv {
        Ok(inv) => inv,
        Err(why) => {
            out.push_str(&format!("\nInventory: {why}.\n"));
            return out + &render_prechecks(source);
        }
    };

    out.push_str("\nDisks:\n");
    if inv.disks.is_empty() {
        out.push_str("  none reported\n");
    }
    for d in &inv.disks {
        out.push_str(&render_disk(d));
    }

    out.push_str("\nNetwork:\n");
    let mut t = Table::new(&["INTERFACE", "MAC", "ADDRESSES", "MTU", "CONFIG"]);
    for n in &inv.network {
        let config = match n.config {
            AddrConfig::Static => "static",
            AddrConfig::Dhcp => "DHCP",
            AddrConfig::Unknown => "unknown",
        };
        let config = match &n.config_source {
            Some(src) => format!("{config} ({src})"),
            None => config.to_owned(),
        };
        t.row(vec![
            n.name.clone(),
            n.mac.clone().unwrap_or_default(),
            n.addresses.join(", "),
            n.mtu.map(|m| m.to_string()).unwrap_or_default(),
            config,
        ]);
    }
    if t.is_empty() {
        out.push_str("  no interfaces reported\n");
    } else {
        for line in t.render().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&key_values(
        &[
            ("Gateway", inv.gateway.clone().unwrap_or_default()),
            ("DNS", inv.dns.join(", ")),
        ],
        2,
    ));
    out + &render_prechecks(source)
}

fn render_prechecks(source: &Value) -> String {
    let mut out = String::from("\nPrechecks:\n");
    match parse_prechecks(source) {
        Err(why) => out.push_str(&format!("  {why}\n")),
        Ok(checks) if checks.is_empty() => out.push_str("  none reported\n"),
        Ok(checks) => {
            let failed = checks.iter().filter(|c| !c.passed).count();
            let mut t = Table::new(&["RESULT", "CHECK", "REASON"]);
            for c in &checks {
                t.row(vec![
                    if c.passed { "pass" } else { "FAIL" }.to_owned(),
                    c.name.clone(),
                    c.reason.clone(),
                ]);
            }
            for line in t.render().lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!(
                "  {} passed, {failed} failed\n",
                checks.len() - failed
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_types::inventory::{DiskSource, NetInterface, OsRelease, Partition};
    use serde_json::json;

    fn inventory() -> Inventory {
        Inventory {
            hostname: "web-01".into(),
            os: OsRelease {
                id: "debian".into(),
                name: "Debian GNU/Linux".into(),
                version_id: "12".into(),
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            },
            kernel: "6.1.0-18-amd64".into(),
            architecture: "x86_64".into(),
            boot_mode: BootMode::Uefi,
            cpus: 4,
            memory_bytes: 8 << 30,
            disks: vec![Disk {
                index: 0,
                path: "/dev/vda".into(),
                source: DiskSource::BlockDevice,
                size_bytes: 20 << 30,
                model: None,
                partition_table: Some(PartitionTableType::Gpt),
                table_uuid: None,
                partitions: vec![
                    Partition {
                        number: 1,
                        start_bytes: 1 << 20,
                        size_bytes: 512 << 20,
                        type_id: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into(),
                        bootable: false,
                        part_uuid: None,
                        filesystem: Some(Filesystem {
                            fs_type: "vfat".into(),
                            uuid: Some("ABCD-1234".into()),
                            label: None,
                            mount_point: Some("/boot/efi".into()),
                        }),
                    },
                    Partition {
                        number: 2,
                        start_bytes: 513 << 20,
                        size_bytes: (20 << 30) - (514 << 20),
                        type_id: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
                        bootable: false,
                        part_uuid: None,
                        filesystem: Some(Filesystem {
                            fs_type: "ext4".into(),
                            uuid: Some("0b1c".into()),
                            label: Some("root".into()),
                            mount_point: Some("/".into()),
                        }),
                    },
                ],
                filesystem: None,
            }],
            network: vec![NetInterface {
                name: "eth0".into(),
                mac: Some("52:54:00:12:34:56".into()),
                addresses: vec!["192.0.2.10/24".into()],
                mtu: Some(1500),
                config: AddrConfig::Static,
                config_source: Some("/etc/network/interfaces".into()),
            }],
            dns: vec!["192.0.2.1".into()],
            gateway: Some("192.0.2.1".into()),
            agent_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_source_renders_its_inventory_and_prechecks() {
        let checks = vec![
            Precheck {
                name: "boot".into(),
                passed: true,
                reason: "UEFI with an ESP".into(),
            },
            Precheck {
                name: "free-space".into(),
                passed: false,
                reason: "/ has 1% free: free some space".into(),
            },
        ];
        let v = json!({
            "SourceId": "s-1", "Name": "web-01", "State": "Available", "AgentVersion": "0.1.0",
            "HeartbeatTime": "2024-05-01T10:00:00Z",
            "Inventory": serde_json::to_string(&inventory()).expect("json"),
            "Prechecks": serde_json::to_string(&checks).expect("json"),
        });
        let now = time::macros::datetime!(2024-05-01 10:00:42 UTC);
        let out = render_source(&v, now);
        for want in [
            "Source server s-1 (web-01)",
            "last heartbeat 42s ago",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "UEFI",
            "Memory:       8.0 GiB",
            "Disk 0 (system): /dev/vda, 20.0 GiB, GPT",
            "/boot/efi",
            "eth0",
            "static (/etc/network/interfaces)",
            "FAIL    free-space  /ha",
            "1 passed, 1 failed",
        ] {
            let want = want.replace("/ha", "/ has 1% free");
            assert!(out.contains(&want), "missing {want:?} in:\n{out}");
        }
        // The root partition's row has its filesystem, mount point and label in columns.
        let root = out
            .lines()
            .find(|l| l.contains(" ext4 "))
            .expect("root partition row");
        assert!(
            root.contains("19.5 GiB") && root.contains(" / ") && root.contains("root"),
            "{root}"
        );
    }

    #[test]
    fn a_source_without_inventory_still_renders() {
        let v =
            json!({"SourceId": "s-2", "Name": "x", "State": "Unavailable", "Inventory": "{oops"});
        let out = render_source(&v, time::OffsetDateTime::now_utc());
        assert!(
            out.contains("Inventory: the inventory could not be read"),
            "{out}"
        );
        assert!(out.contains("Prechecks:\n  none reported"), "{out}");
    }

    #[test]
    fn the_source_list_shows_os_and_disks() {
        let v = json!({
            "SourceId": "s-1", "Name": "web-01", "State": "Available", "AgentVersion": "0.1.0",
            "Inventory": serde_json::to_string(&inventory()).expect("json"),
        });
        let text = sources_table(&[v], time::OffsetDateTime::now_utc()).render();
        let row = text.lines().nth(1).expect("one row");
        assert!(row.starts_with("s-1  web-01  Available  Debian GNU/Linux 12 (bookworm)  x86_64  1 (20.0 GiB)  0.1.0"), "{row}");
    }
}
