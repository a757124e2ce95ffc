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
            let Some(items) = s
                .list_items(
                    SMC_VERSION,
                    "DescribeSourceServers",
                    &[],
                    ("SourceServers", "SourceServer"),
                    50,
                    "No source servers. Register one: create an activation code with \
                     `ferry activation-code create` and run the command it prints on the server.\n",
                )
                .await?
            else {
                return Ok(());
            };
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

/// A partition type for people: the common GPT type GUIDs and MBR type IDs, else the raw ID.
pub fn partition_type_name(type_id: &str) -> String {
    let name = match type_id.to_ascii_uppercase().trim_start_matches("0X") {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" | "EF" => "EFI system",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" | "83" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" | "82" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" | "8E" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" | "FD" => "Linux RAID",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" | "7" | "07" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "5" | "05" | "F" | "0F" | "85" => "extended",
        _ => return format!("type {type_id}"),
    };
    name.to_owned()
}

/// A filesystem's cells: type (LVM and RAID members spelled out), mount point, `UUID …`, `label …`.
fn fs_cells(fs: Option<&Filesystem>) -> [String; 4] {
    let Some(f) = fs else {
        return [
            "no filesystem".to_owned(),
            String::new(),
            String::new(),
            String::new(),
        ];
    };
    let kind = match f.fs_type.as_str() {
        "LVM2_member" => "LVM physical volume".to_owned(),
        "linux_raid_member" => "RAID member".to_owned(),
        other => other.to_owned(),
    };
    [
        kind,
        f.mount_point.clone().unwrap_or_default(),
        f.uuid
            .as_deref()
            .map(|u| format!("UUID {u}"))
            .unwrap_or_default(),
        f.label
            .as_deref()
            .filter(|l| !l.is_empty())
            .map(|l| format!("label {l}"))
            .unwrap_or_default(),
    ]
}

/// One disk as a tree: the disk's line, then one aligned line per partition (or whole-disk filesystem).
pub fn render_disk(d: &Disk) -> String {
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
    // Header-less columns: the empty header line is dropped below.
    let mut t = Table::new(&["", "", "", "", "", "", ""]);
    let count = d.partitions.len() + usize::from(d.filesystem.is_some());
    let branch = |i: usize| if i + 1 == count { "└─" } else { "├─" };
    for (i, p) in d.partitions.iter().enumerate() {
        let [fs, mount, uuid, label] = fs_cells(p.filesystem.as_ref());
        t.row(vec![
            format!(
                "{} {}{}",
                branch(i),
                p.number,
                if p.bootable { "*" } else { "" }
            ),
            human_bytes(p.size_bytes),
            partition_type_name(&p.type_id),
            fs,
            mount,
            uuid,
            label,
        ]);
    }
    if let Some(f) = &d.filesystem {
        let [fs, mount, uuid, label] = fs_cells(Some(f));
        t.row(vec![
            format!("{} whole disk", branch(count - 1)),
            human_bytes(d.size_bytes),
            String::new(),
            fs,
            mount,
            uuid,
            label,
        ]);
    }
    if t.is_empty() {
        head.push_str("    └─ no partitions and no filesystem found\n");
    }
    for line in t.render().lines().skip(1) {
        head.push_str("    ");
        head.push_str(line);
        head.push('\n');
    }
    head
}

/// What to do about a source in `state` (with its job and hostname), or nothing when all is well.
pub fn state_hint(state: &str, job: &str, hostname: &str) -> String {
    let host = if hostname.is_empty() {
        "the source".to_owned()
    } else {
        hostname.to_owned()
    };
    match state {
        "Unavailable" => format!(
            "its agent stopped reporting: check that ferry-agent runs on {host} and can reach the server \
             (`ferry doctor --source` there shows why)"
        ),
        "InUse" if !job.is_empty() => format!("replicating for job {job}: `ferry job watch {job}`"),
        "Deleting" => "being deleted; its agent can no longer report".to_owned(),
        _ => String::new(),
    }
}

/// The readable description of one source server: summary, disks, network, prechecks.
pub fn render_source(source: &Value, now: time::OffsetDateTime) -> String {
    let mut out = format!(
        "Source server {} ({})\n",
        text(source, "SourceId"),
        text(source, "Name")
    );
    let inv = parse_inventory(source);
    let hostname = inv.as_ref().map(|i| i.hostname.clone()).unwrap_or_default();
    let mut state = text(source, "State");
    let hint = state_hint(&state, &text(source, "JobId"), &hostname);
    if !hint.is_empty() {
        state = format!("{state} ({hint})");
    }
    let error = [text(source, "ErrorCode"), text(source, "StatusInfo")]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let heartbeat = heartbeat_age(source, now);
    let mut summary = vec![
        ("State", state),
        ("Error", error),
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
                    if c.passed { "PASS" } else { "FAIL" }.to_owned(),
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
            if failed > 0 {
                out.push_str(
                    "  Fix what the FAIL lines say on the source; its agent reports the checks again at its \
                     next heartbeat (`ferry doctor --source` there runs them at once).\n",
                );
            }
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
            "PASS    boot",
            "1 passed, 1 failed",
            "Fix what the FAIL lines say",
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
    fn disks_render_as_a_tree_of_partitions() {
        let inv = inventory();
        let out = render_disk(&inv.disks[0]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], "  Disk 0 (system): /dev/vda, 20.0 GiB, GPT");
        assert!(lines[1].starts_with("    ├─ 1  512.0 MiB"), "{out}");
        assert!(lines[2].starts_with("    └─ 2  19.5 GiB "), "{out}");
        for want in ["EFI system", "vfat", "/boot/efi", "UUID ABCD-1234"] {
            assert!(lines[1].contains(want), "{want:?} missing: {}", lines[1]);
        }
        // Columns line up: the filesystem type starts at the same place on both lines.
        assert_eq!(lines[1].find("vfat"), lines[2].find("ext4"), "{out}");

        let mut lvm = inv.disks[0].clone();
        lvm.index = 1;
        lvm.partition_table = Some(PartitionTableType::Mbr);
        lvm.partitions.truncate(1);
        lvm.partitions[0].type_id = "8e".into();
        lvm.partitions[0].filesystem = Some(Filesystem {
            fs_type: "LVM2_member".into(),
            uuid: Some("pv-uuid".into()),
            label: None,
            mount_point: None,
        });
        let out = render_disk(&lvm);
        assert!(
            out.starts_with("  Disk 1: /dev/vda, 20.0 GiB, MBR\n"),
            "{out}"
        );
        let row = out.lines().nth(1).expect("one partition");
        assert!(
            row.contains("└─ 1")
                && row.contains("Linux LVM")
                && row.contains("LVM physical volume"),
            "{row}"
        );

        let mut whole = inv.disks[0].clone();
        whole.partition_table = None;
        whole.partitions.clear();
        whole.filesystem = Some(Filesystem {
            fs_type: "xfs".into(),
            uuid: None,
            label: Some("data".into()),
            mount_point: Some("/srv".into()),
        });
        let out = render_disk(&whole);
        assert!(out.contains("└─ whole disk  20.0 GiB"), "{out}");
        assert!(out.contains("label data"), "{out}");
        whole.filesystem = None;
        assert!(render_disk(&whole).contains("no partitions and no filesystem found"));
    }

    #[test]
    fn unavailable_sources_say_what_to_check() {
        let v = json!({
            "SourceId": "s-3", "Name": "db", "State": "Unavailable",
            "ErrorCode": "Agent.Offline", "StatusInfo": "no heartbeat for 3 minutes",
            "Inventory": serde_json::to_string(&inventory()).expect("json"),
        });
        let out = render_source(&v, time::OffsetDateTime::now_utc());
        let state = out
            .lines()
            .find(|l| l.trim_start().starts_with("State:"))
            .expect("state line");
        assert!(
            state.contains("Unavailable (") && state.contains("ferry-agent runs on web-01"),
            "{state}"
        );
        assert!(
            out.contains("Error:") && out.contains("Agent.Offline: no heartbeat for 3 minutes"),
            "{out}"
        );
        assert_eq!(state_hint("Available", "", "x"), "");
        assert!(state_hint("InUse", "j-9", "x").contains("ferry job watch j-9"));
    }

    #[test]
    fn partition_types_have_names() {
        assert_eq!(
            partition_type_name("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            "EFI system"
        );
        assert_eq!(partition_type_name("83"), "Linux filesystem");
        assert_eq!(partition_type_name("0x82"), "Linux swap");
        assert_eq!(partition_type_name("ab"), "type ab");
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
