//! The guest's network configuration: read the source's settings (ifupdown, netplan, systemd-networkd,
//! NetworkManager keyfiles, RHEL ifcfg), keep them on record, and write a configuration that comes up on
//! the target NIC (DHCP, or the static addresses re-applied with [`NetworkMode::KeepStatic`]).
//!
//! Invariants: the source's settings are recorded once, in `/etc/ferry/source-network.json` (version 1),
//! before anything is rewritten; later runs read the record instead of the (already rewritten) files.
//! Originals are kept: `<file>.ferry-orig` where the tool ignores that name (ifupdown, netplan `*.yaml`,
//! networkd `*.network`), under `/etc/ferry/orig/` where it does not (NetworkManager and ifcfg read every
//! file in their directory). Files Ferry writes start with [`MARKER`]. MAC bindings are never carried
//! over (the target's NIC has another MAC).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ctx::Ctx;
use super::{AdaptError, NetworkMode};

/// The first line of every network file Ferry writes.
pub(crate) const MARKER: &str = "# Written by Ferry guest adaptation (docs/guest-adaptation.md)";
const RECORD: &str = "/etc/ferry/source-network.json";
const KIND: &str = "network";
/// DHCP client programs ifupdown can use.
const DHCP_CLIENTS: [&str; 7] = [
    "/sbin/dhclient",
    "/usr/sbin/dhclient",
    "/sbin/dhcpcd",
    "/usr/sbin/dhcpcd",
    "/sbin/udhcpc",
    "/usr/sbin/udhcpc",
    "/sbin/pump",
];
const NETWORKD: [&str; 2] = [
    "/lib/systemd/systemd-networkd",
    "/usr/lib/systemd/systemd-networkd",
];

/// One interface's configuration on the source, as found in its files.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StaticInterface {
    /// `ifupdown`, `netplan`, `networkd`, `networkmanager` or `ifcfg`.
    pub style: String,
    /// The guest file it came from.
    pub config: String,
    /// The interface name (empty when the file matched by MAC only).
    pub name: String,
    /// The MAC address the configuration was bound to, if any.
    pub mac: Option<String>,
    /// The source used DHCP on it.
    pub dhcp: bool,
    /// Static addresses, CIDR (`192.0.2.10/24`).
    pub addresses: Vec<String>,
    /// Default gateway.
    pub gateway: Option<String>,
    /// DNS servers.
    pub dns: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    version: u32,
    interfaces: Vec<StaticInterface>,
}

fn mask_to_prefix(mask: &str) -> Option<u32> {
    let parts: Vec<u8> = mask
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    let n = u32::from_be_bytes([parts[0], parts[1], parts[2], parts[3]]);
    Some(n.count_ones())
}

fn with_prefix(addr: &str, mask: Option<&str>) -> String {
    if addr.contains('/') {
        return addr.to_string();
    }
    match mask.and_then(|m| m.parse::<u32>().ok().or_else(|| mask_to_prefix(m))) {
        Some(p) => format!("{addr}/{p}"),
        None if addr.contains(':') => format!("{addr}/64"),
        None => format!("{addr}/24"),
    }
}

/// Parses ifupdown `interfaces` text.
pub(crate) fn parse_ifupdown(text: &str, config: &str) -> Vec<StaticInterface> {
    let mut out: Vec<StaticInterface> = Vec::new();
    let mut cur: Option<usize> = None;
    let mut pending_mask: Option<String> = None;
    let mut pending_addr: Option<String> = None;
    let flush = |out: &mut Vec<StaticInterface>,
                 cur: Option<usize>,
                 a: &mut Option<String>,
                 m: &mut Option<String>| {
        if let (Some(i), Some(addr)) = (cur, a.take()) {
            out[i].addresses.push(with_prefix(&addr, m.as_deref()));
        }
        *m = None;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(&kw) = f.first() else { continue };
        match kw {
            "iface" => {
                flush(&mut out, cur, &mut pending_addr, &mut pending_mask);
                cur = None;
                let (Some(name), Some(method)) = (f.get(1), f.get(3)) else {
                    continue;
                };
                if *name == "lo" {
                    continue;
                }
                let i = match out.iter().position(|s| s.name == *name) {
                    Some(i) => i,
                    None => {
                        out.push(StaticInterface {
                            style: "ifupdown".into(),
                            config: config.into(),
                            name: name.to_string(),
                            ..Default::default()
                        });
                        out.len() - 1
                    }
                };
                if *method == "dhcp" && f.get(2) == Some(&"inet") {
                    out[i].dhcp = true;
                }
                cur = Some(i);
            }
            "auto" | "source" | "source-directory" | "mapping" | "rename" | "no-auto-down"
            | "no-scripts" => {
                flush(&mut out, cur, &mut pending_addr, &mut pending_mask);
                cur = None;
            }
            k if k.starts_with("allow-") => {
                flush(&mut out, cur, &mut pending_addr, &mut pending_mask);
                cur = None;
            }
            _ => {
                let Some(i) = cur else { continue };
                match kw {
                    "address" => {
                        flush(&mut out, cur, &mut pending_addr, &mut pending_mask);
                        pending_addr = f.get(1).map(|s| s.to_string());
                    }
                    "netmask" => pending_mask = f.get(1).map(|s| s.to_string()),
                    "gateway" => out[i].gateway = f.get(1).map(|s| s.to_string()),
                    "dns-nameservers" => out[i].dns.extend(f[1..].iter().map(|s| s.to_string())),
                    "hwaddress" => {
                        out[i].mac = f.last().filter(|_| f.len() > 1).map(|s| s.to_lowercase())
                    }
                    _ => {}
                }
            }
        }
    }
    flush(&mut out, cur, &mut pending_addr, &mut pending_mask);
    out
}

fn ini_sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            out.push((l[1..l.len() - 1].to_string(), Vec::new()));
        } else if let Some((k, v)) = l.split_once('=')
            && let Some(last) = out.last_mut()
        {
            last.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// Parses a systemd-networkd `.network` file.
pub(crate) fn parse_networkd(text: &str, config: &str) -> Option<StaticInterface> {
    let mut s = StaticInterface {
        style: "networkd".into(),
        config: config.into(),
        ..Default::default()
    };
    for (sec, kvs) in ini_sections(text) {
        for (k, v) in kvs {
            match (sec.as_str(), k.as_str()) {
                ("Match", "Name") => s.name = v.split_whitespace().next().unwrap_or("").to_string(),
                ("Match", "MACAddress") => s.mac = Some(v.to_lowercase()),
                ("Network", "Address") | ("Address", "Address") => {
                    s.addresses.push(with_prefix(&v, None))
                }
                ("Network", "Gateway") | ("Route", "Gateway") if s.gateway.is_none() => {
                    s.gateway = Some(v)
                }
                ("Network", "DNS") => s.dns.extend(v.split_whitespace().map(String::from)),
                ("Network", "DHCP") => {
                    s.dhcp = matches!(v.as_str(), "yes" | "true" | "ipv4" | "both")
                }
                _ => {}
            }
        }
    }
    (!s.name.is_empty() || s.mac.is_some()).then_some(s)
}

/// Parses a NetworkManager keyfile; `None` unless it is an ethernet connection.
pub(crate) fn parse_nm(text: &str, config: &str) -> Option<StaticInterface> {
    let mut s = StaticInterface {
        style: "networkmanager".into(),
        config: config.into(),
        ..Default::default()
    };
    let mut ethernet = false;
    for (sec, kvs) in ini_sections(text) {
        for (k, v) in kvs {
            match (sec.as_str(), k.as_str()) {
                ("connection", "type") => ethernet = v == "ethernet" || v == "802-3-ethernet",
                ("connection", "interface-name") => s.name = v,
                ("ethernet", "mac-address") | ("802-3-ethernet", "mac-address") => {
                    s.mac = Some(v.to_lowercase())
                }
                ("ipv4", "method") => s.dhcp = v == "auto",
                ("ipv4", k) if k == "address" || k == "addresses" || k.starts_with("address") => {
                    for a in v.split(';').filter(|a| !a.is_empty()) {
                        let mut it = a.split(',');
                        if let Some(addr) = it.next() {
                            s.addresses.push(with_prefix(addr.trim(), None));
                        }
                        if let Some(gw) = it.next() {
                            s.gateway.get_or_insert(gw.trim().to_string());
                        }
                    }
                }
                ("ipv4", "gateway") => s.gateway = Some(v),
                ("ipv4", "dns") => s
                    .dns
                    .extend(v.split(';').filter(|d| !d.is_empty()).map(String::from)),
                _ => {}
            }
        }
    }
    ethernet.then_some(s)
}

/// Parses a RHEL `ifcfg-*` file.
pub(crate) fn parse_ifcfg(text: &str, config: &str, file_name: &str) -> StaticInterface {
    let mut kv = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            kv.insert(
                k.trim().to_string(),
                v.trim().trim_matches(|c| c == '"' || c == '\'').to_string(),
            );
        }
    }
    let mut s = StaticInterface {
        style: "ifcfg".into(),
        config: config.into(),
        name: kv
            .get("DEVICE")
            .cloned()
            .unwrap_or_else(|| file_name.trim_start_matches("ifcfg-").to_string()),
        mac: kv.get("HWADDR").map(|m| m.to_lowercase()),
        dhcp: kv.get("BOOTPROTO").is_some_and(|b| b == "dhcp"),
        gateway: kv.get("GATEWAY").cloned(),
        ..Default::default()
    };
    for suffix in ["", "0", "1", "2", "3"] {
        if let Some(a) = kv.get(&format!("IPADDR{suffix}")) {
            let mask = kv
                .get(&format!("PREFIX{suffix}"))
                .or_else(|| kv.get(&format!("NETMASK{suffix}")));
            s.addresses.push(with_prefix(a, mask.map(|m| m.as_str())));
        }
    }
    for i in 1..=4 {
        if let Some(d) = kv.get(&format!("DNS{i}")) {
            s.dns.push(d.clone());
        }
    }
    s
}

fn yaml_strs(v: Option<&serde_yaml_ng::Value>) -> Vec<String> {
    match v {
        Some(serde_yaml_ng::Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| match i {
                serde_yaml_ng::Value::String(s) => Some(s.clone()),
                serde_yaml_ng::Value::Mapping(m) => {
                    m.keys().next().and_then(|k| k.as_str()).map(String::from)
                }
                _ => None,
            })
            .collect(),
        Some(serde_yaml_ng::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Parses a netplan YAML file: its `ethernets` (bonds, bridges and VLANs are reported by the caller).
pub(crate) fn parse_netplan(text: &str, config: &str) -> Result<Vec<StaticInterface>, String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let Some(eths) = doc
        .get("network")
        .and_then(|n| n.get("ethernets"))
        .and_then(|e| e.as_mapping())
    else {
        return Ok(out);
    };
    for (id, e) in eths {
        let id = id.as_str().unwrap_or("").to_string();
        let m = e.get("match");
        let name = e
            .get("set-name")
            .or_else(|| m.and_then(|m| m.get("name")))
            .and_then(|v| v.as_str())
            .map(String::from)
            .unwrap_or(id);
        let mut s = StaticInterface {
            style: "netplan".into(),
            config: config.into(),
            name,
            mac: m
                .and_then(|m| m.get("macaddress"))
                .and_then(|v| v.as_str())
                .map(|s| s.to_lowercase()),
            dhcp: matches!(e.get("dhcp4"), Some(serde_yaml_ng::Value::Bool(true)))
                || e.get("dhcp4")
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| v == "yes" || v == "true"),
            addresses: yaml_strs(e.get("addresses")),
            gateway: e.get("gateway4").and_then(|v| v.as_str()).map(String::from),
            dns: yaml_strs(e.get("nameservers").and_then(|n| n.get("addresses"))),
        };
        if s.gateway.is_none()
            && let Some(serde_yaml_ng::Value::Sequence(routes)) = e.get("routes")
        {
            {
                s.gateway = routes
                    .iter()
                    .find(|r| {
                        r.get("to")
                            .and_then(|t| t.as_str())
                            .is_some_and(|t| t == "default" || t == "0.0.0.0/0")
                    })
                    .and_then(|r| r.get("via"))
                    .and_then(|v| v.as_str())
                    .map(String::from);
            }
        }
        out.push(s);
    }
    Ok(out)
}

fn nic_names(target: &str) -> Vec<String> {
    let mut v = vec![target.to_string()];
    for n in ["eth0", "ens3"] {
        if !v.iter().any(|x| x == n) {
            v.push(n.to_string());
        }
    }
    v
}

fn gen_ifupdown(names: &[String], st: Option<&StaticInterface>) -> String {
    let mut s = format!(
        "{MARKER}\n# The source's configuration: /etc/network/interfaces.ferry-orig and {RECORD}.\n\nauto lo\niface lo inet loopback\n"
    );
    match st {
        Some(st) => {
            let n = &names[0];
            s.push_str(&format!("\nallow-hotplug {n}\niface {n} inet static\n"));
            for a in st.addresses.iter().filter(|a| !a.contains(':')) {
                s.push_str(&format!("    address {a}\n"));
            }
            if let Some(g) = st.gateway.as_ref().filter(|g| !g.contains(':')) {
                s.push_str(&format!("    gateway {g}\n"));
            }
            if !st.dns.is_empty() {
                s.push_str(&format!("    dns-nameservers {}\n", st.dns.join(" ")));
            }
            let v6: Vec<&String> = st.addresses.iter().filter(|a| a.contains(':')).collect();
            if !v6.is_empty() {
                s.push_str(&format!("\niface {n} inet6 static\n"));
                for a in v6 {
                    s.push_str(&format!("    address {a}\n"));
                }
            }
        }
        None => {
            for n in names {
                s.push_str(&format!("\nallow-hotplug {n}\niface {n} inet dhcp\n"));
            }
        }
    }
    s
}

fn gen_ifupdown_lo_only() -> String {
    format!(
        "{MARKER}\n# The source's configuration: /etc/network/interfaces.ferry-orig and {RECORD}.\n# The target's NIC is configured by systemd-networkd (/etc/systemd/network/90-ferry.network).\n\nauto lo\niface lo inet loopback\n"
    )
}

fn gen_netplan(names: &[String], st: Option<&StaticInterface>) -> String {
    let mut s = format!("{MARKER}\nnetwork:\n  version: 2\n  ethernets:\n");
    match st {
        Some(st) => {
            s.push_str(&format!(
                "    {}:\n      addresses: [{}]\n",
                names[0],
                st.addresses.join(", ")
            ));
            if let Some(g) = &st.gateway {
                s.push_str(&format!(
                    "      routes:\n        - to: default\n          via: {g}\n"
                ));
            }
            if !st.dns.is_empty() {
                s.push_str(&format!(
                    "      nameservers:\n        addresses: [{}]\n",
                    st.dns.join(", ")
                ));
            }
        }
        None => {
            for n in names {
                s.push_str(&format!(
                    "    {n}:\n      dhcp4: true\n      optional: true\n"
                ));
            }
        }
    }
    s
}

fn gen_networkd(names: &[String], st: Option<&StaticInterface>) -> String {
    let mut s = format!("{MARKER}\n[Match]\n");
    match st {
        Some(st) => {
            s.push_str(&format!("Name={}\n\n[Network]\n", names[0]));
            for a in &st.addresses {
                s.push_str(&format!("Address={a}\n"));
            }
            if let Some(g) = &st.gateway {
                s.push_str(&format!("Gateway={g}\n"));
            }
            for d in &st.dns {
                s.push_str(&format!("DNS={d}\n"));
            }
        }
        None => s.push_str(&format!(
            "Name={}\n\n[Network]\nDHCP=yes\n",
            names.join(" ")
        )),
    }
    s
}

fn gen_nm(names: &[String], st: Option<&StaticInterface>) -> String {
    let n = &names[0];
    let mut s = format!(
        "{MARKER}\n[connection]\nid=ferry-{n}\ntype=ethernet\ninterface-name={n}\nautoconnect=true\n\n[ipv4]\n"
    );
    match st {
        Some(st) => {
            s.push_str("method=manual\n");
            for (i, a) in st.addresses.iter().filter(|a| !a.contains(':')).enumerate() {
                s.push_str(&format!("address{}={a}\n", i + 1));
            }
            if let Some(g) = &st.gateway {
                s.push_str(&format!("gateway={g}\n"));
            }
            if !st.dns.is_empty() {
                s.push_str(&format!("dns={};\n", st.dns.join(";")));
            }
        }
        None => s.push_str("method=auto\n"),
    }
    s.push_str("\n[ipv6]\nmethod=auto\n");
    s
}

fn gen_ifcfg(names: &[String], st: Option<&StaticInterface>) -> String {
    let n = &names[0];
    let mut s = format!("{MARKER}\nDEVICE={n}\nNAME={n}\nTYPE=Ethernet\nONBOOT=yes\n");
    match st {
        Some(st) => {
            s.push_str("BOOTPROTO=none\n");
            for (i, a) in st.addresses.iter().filter(|a| !a.contains(':')).enumerate() {
                let (ip, p) = a.split_once('/').unwrap_or((a, "24"));
                s.push_str(&format!("IPADDR{i}={ip}\nPREFIX{i}={p}\n"));
            }
            if let Some(g) = &st.gateway {
                s.push_str(&format!("GATEWAY={g}\n"));
            }
            for (i, d) in st.dns.iter().enumerate() {
                s.push_str(&format!("DNS{}={d}\n", i + 1));
            }
        }
        None => s.push_str("BOOTPROTO=dhcp\n"),
    }
    s
}

fn is_ours(ctx: &Ctx, guest: &str) -> bool {
    ctx.read_string(guest)
        .ok()
        .flatten()
        .is_some_and(|t| t.starts_with(MARKER))
}

/// What was found per style: the files (guest paths) that configure interfaces, not Ferry's own.
#[derive(Default)]
struct Found {
    ifupdown: bool,
    netplan: Vec<String>,
    networkd: Vec<String>,
    nm: Vec<String>,
    ifcfg: Vec<String>,
    ours_netplan: bool,
    ours_networkd: bool,
    ours_nm: bool,
    ours_ifcfg: bool,
}

fn scan(ctx: &mut Ctx) -> Result<(Found, Vec<StaticInterface>), AdaptError> {
    let mut f = Found::default();
    let mut ifaces = Vec::new();
    // ifupdown
    if let Some(t) = ctx.read_string("/etc/network/interfaces")? {
        if t.starts_with(MARKER) {
            f.ifupdown = true;
        } else {
            let mut found = parse_ifupdown(&t, "/etc/network/interfaces");
            for name in ctx.list("/etc/network/interfaces.d") {
                let p = format!("/etc/network/interfaces.d/{name}");
                if let Some(t) = ctx.read_string(&p)? {
                    found.extend(parse_ifupdown(&t, &p));
                }
            }
            f.ifupdown = !found.is_empty();
            ifaces.extend(found);
        }
    }
    // netplan
    for name in ctx.list("/etc/netplan") {
        let p = format!("/etc/netplan/{name}");
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        if is_ours(ctx, &p) {
            f.ours_netplan = true;
            continue;
        }
        let Some(t) = ctx.read_string(&p)? else {
            continue;
        };
        match parse_netplan(&t, &p) {
            Ok(found) if !found.is_empty() => {
                f.netplan.push(p);
                ifaces.extend(found);
            }
            Ok(_) => {
                if t.contains("bonds:") || t.contains("bridges:") || t.contains("vlans:") {
                    ctx.warn(format!(
                        "{p} configures bonds, bridges or VLANs, which were left as they are: the target has one NIC"
                    ));
                }
            }
            Err(e) => ctx.warn(format!("{p} is not valid YAML ({e}); it was left as is")),
        }
    }
    // systemd-networkd
    for name in ctx.list("/etc/systemd/network") {
        let p = format!("/etc/systemd/network/{name}");
        if !name.ends_with(".network") {
            continue;
        }
        if is_ours(ctx, &p) {
            f.ours_networkd = true;
            continue;
        }
        if let Some(s) = ctx.read_string(&p)?.and_then(|t| parse_networkd(&t, &p)) {
            f.networkd.push(p);
            ifaces.push(s);
        }
    }
    // NetworkManager keyfiles
    for name in ctx.list("/etc/NetworkManager/system-connections") {
        let p = format!("/etc/NetworkManager/system-connections/{name}");
        if is_ours(ctx, &p) {
            f.ours_nm = true;
            continue;
        }
        if let Some(s) = ctx.read_string(&p)?.and_then(|t| parse_nm(&t, &p)) {
            f.nm.push(p);
            ifaces.push(s);
        }
    }
    // RHEL ifcfg
    for name in ctx.list("/etc/sysconfig/network-scripts") {
        if !name.starts_with("ifcfg-") || name == "ifcfg-lo" {
            continue;
        }
        let p = format!("/etc/sysconfig/network-scripts/{name}");
        if is_ours(ctx, &p) {
            f.ours_ifcfg = true;
            continue;
        }
        if let Some(t) = ctx.read_string(&p)? {
            f.ifcfg.push(p.clone());
            ifaces.push(parse_ifcfg(&t, &p, &name));
        }
    }
    Ok((f, ifaces))
}

/// Records the source's settings and rewrites the configuration for the target. Returns the record.
/// Sets a configuration style's own files aside (each renamed to `kept_as(path)`, reported as
/// "`why`, kept as …") and writes Ferry's replacement `target`.
#[allow(clippy::too_many_arguments)]
fn replace_config(
    ctx: &mut Ctx,
    files: &[String],
    kept_as: impl Fn(&str) -> String,
    why: &str,
    target: &str,
    content: &str,
    mode: u32,
    what: &str,
) -> Result<(), AdaptError> {
    for p in files {
        let to = kept_as(p);
        ctx.rename(KIND, p, &to, format!("{why}, kept as {to}"))?;
    }
    ctx.write(KIND, target, content.as_bytes(), mode, None, what)?;
    Ok(())
}

pub(crate) fn adapt_network(ctx: &mut Ctx) -> Result<Vec<StaticInterface>, AdaptError> {
    let (found, scanned) = scan(ctx)?;
    let recorded = match ctx.read(RECORD)? {
        Some(b) => serde_json::from_slice::<Record>(&b)
            .ok()
            .filter(|r| r.version == 1),
        None => None,
    };
    let source = match recorded {
        Some(r) => r.interfaces,
        None => {
            let rec = Record {
                version: 1,
                interfaces: scanned.clone(),
            };
            let mut json = serde_json::to_vec_pretty(&rec).unwrap_or_default();
            json.push(b'\n');
            let n = scanned.len();
            ctx.write(
                KIND,
                RECORD,
                &json,
                0o644,
                None,
                format!("recorded the source's network settings ({n} interface(s))"),
            )?;
            scanned
        }
    };
    let names = nic_names(&ctx.opts.target_nic);
    let st = match ctx.opts.network {
        NetworkMode::Dhcp => None,
        NetworkMode::KeepStatic => {
            let s = source.iter().find(|s| !s.addresses.is_empty());
            if s.is_none() {
                ctx.warn("KeepStatic was asked but the source has no static address: the target NIC uses DHCP");
            }
            s
        }
    };
    let what = match st {
        Some(s) => format!("static {} on {}", s.addresses.join(", "), names[0]),
        None => format!("DHCP on {}", names.join("/")),
    };

    // ifupdown needs a DHCP client program; a server configured statically often has none. Then, if
    // the guest has systemd-networkd, DHCP is handed to it and ifupdown keeps only the loopback.
    let ifupdown_via_networkd = found.ifupdown
        && st.is_none()
        && !DHCP_CLIENTS.iter().any(|p| ctx.exists(p))
        && NETWORKD.iter().any(|p| ctx.exists(p));
    if ifupdown_via_networkd {
        ctx.write(
            KIND,
            "/etc/network/interfaces",
            gen_ifupdown_lo_only().as_bytes(),
            0o644,
            Some("/etc/network/interfaces.ferry-orig"),
            "loopback only (the guest has no DHCP client for ifupdown: systemd-networkd does DHCP); original kept as /etc/network/interfaces.ferry-orig",
        )?;
        ctx.write(
            KIND,
            "/etc/systemd/network/90-ferry.network",
            gen_networkd(&names, None).as_bytes(),
            0o644,
            None,
            what.clone(),
        )?;
        let unit_dir = if ctx.exists("/lib/systemd/system/systemd-networkd.service") {
            "/lib/systemd/system"
        } else {
            "/usr/lib/systemd/system"
        };
        ctx.symlink(
            KIND,
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            &format!("{unit_dir}/systemd-networkd.service"),
            "enabled systemd-networkd",
        )?;
        ctx.symlink(
            KIND,
            "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            &format!("{unit_dir}/systemd-networkd.socket"),
            "enabled systemd-networkd.socket",
        )?;
    } else if found.ifupdown {
        if st.is_none() && !DHCP_CLIENTS.iter().any(|p| ctx.exists(p)) {
            ctx.warn("the guest has no DHCP client (isc-dhcp-client, dhcpcd, udhcpc) and no systemd-networkd: ifupdown cannot get a lease on the target; install isc-dhcp-client on the source or use KeepStatic");
        }
        ctx.write(
            KIND,
            "/etc/network/interfaces",
            gen_ifupdown(&names, st).as_bytes(),
            0o644,
            Some("/etc/network/interfaces.ferry-orig"),
            format!("{what}; original kept as /etc/network/interfaces.ferry-orig (interfaces.d no longer sourced)"),
        )?;
    }
    if !found.netplan.is_empty() || found.ours_netplan {
        replace_config(
            ctx,
            &found.netplan,
            |p| format!("{p}.ferry-orig"),
            "disabled",
            "/etc/netplan/90-ferry.yaml",
            &gen_netplan(&names, st),
            0o600,
            &what,
        )?;
    }
    if !found.networkd.is_empty() || found.ours_networkd {
        replace_config(
            ctx,
            &found.networkd,
            |p| format!("{p}.ferry-orig"),
            "disabled",
            "/etc/systemd/network/90-ferry.network",
            &gen_networkd(&names, st),
            0o644,
            &what,
        )?;
    }
    if !found.nm.is_empty() || found.ours_nm {
        replace_config(
            ctx,
            &found.nm,
            |p| format!("/etc/ferry/orig{p}"),
            "disabled",
            &format!(
                "/etc/NetworkManager/system-connections/ferry-{}.nmconnection",
                names[0]
            ),
            &gen_nm(&names, st),
            0o600,
            &what,
        )?;
    }
    if !found.ifcfg.is_empty() || found.ours_ifcfg {
        replace_config(
            ctx,
            &found.ifcfg,
            |p| format!("/etc/ferry/orig{p}"),
            "disabled (HWADDR binding dropped)",
            &format!("/etc/sysconfig/network-scripts/ifcfg-{}", names[0]),
            &gen_ifcfg(&names, st),
            0o644,
            &what,
        )?;
    }
    if !found.ifupdown
        && found.netplan.is_empty()
        && found.networkd.is_empty()
        && found.nm.is_empty()
        && found.ifcfg.is_empty()
        && !(found.ours_netplan || found.ours_networkd || found.ours_nm || found.ours_ifcfg)
    {
        ctx.warn("no network configuration was found (ifupdown, netplan, systemd-networkd, NetworkManager, ifcfg): the guest's own defaults apply on the target");
    }
    Ok(source)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn ifupdown_static_and_dhcp() {
        let t = "auto lo\niface lo inet loopback\n\nauto ens18\niface ens18 inet static\n  address 192.0.2.10\n  netmask 255.255.255.0\n  gateway 192.0.2.1 # gw\n  dns-nameservers 192.0.2.53 9.9.9.9\n  hwaddress ether 52:54:00:AA:BB:CC\niface ens18 inet6 static\n  address 2001:db8::10/64\n\nallow-hotplug eth1\niface eth1 inet dhcp\n";
        let v = parse_ifupdown(t, "/etc/network/interfaces");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "ens18");
        assert_eq!(v[0].addresses, vec!["192.0.2.10/24", "2001:db8::10/64"]);
        assert_eq!(v[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(v[0].dns, vec!["192.0.2.53", "9.9.9.9"]);
        assert_eq!(v[0].mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        assert!(!v[0].dhcp);
        assert!(v[1].dhcp);
    }

    #[test]
    fn netplan_networkd_nm_ifcfg() {
        let np = "network:\n  version: 2\n  ethernets:\n    lan:\n      match:\n        macaddress: 52:54:00:12:34:56\n      set-name: ens3\n      addresses: [192.0.2.5/24]\n      routes:\n        - to: default\n          via: 192.0.2.1\n      nameservers:\n        addresses: [192.0.2.53]\n";
        let v = parse_netplan(np, "/etc/netplan/50.yaml").unwrap();
        assert_eq!(v[0].name, "ens3");
        assert_eq!(v[0].mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(v[0].addresses, vec!["192.0.2.5/24"]);
        assert_eq!(v[0].gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(v[0].dns, vec!["192.0.2.53"]);
        assert!(parse_netplan("network: [", "x").is_err());

        let nd = "[Match]\nName=ens3\n\n[Network]\nAddress=192.0.2.6/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n";
        let s = parse_networkd(nd, "/etc/systemd/network/10.network").unwrap();
        assert_eq!(
            (s.name.as_str(), s.addresses.len(), s.gateway.as_deref()),
            ("ens3", 1, Some("192.0.2.1"))
        );

        let nm = "[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens3\n[ethernet]\nmac-address=52:54:00:12:34:56\n[ipv4]\nmethod=manual\naddress1=192.0.2.7/24,192.0.2.1\ndns=192.0.2.53;\n";
        let s = parse_nm(nm, "/x").unwrap();
        assert_eq!(s.addresses, vec!["192.0.2.7/24"]);
        assert_eq!(s.gateway.as_deref(), Some("192.0.2.1"));
        assert_eq!(s.dns, vec!["192.0.2.53"]);
        assert!(parse_nm("[connection]\ntype=wifi\n", "/x").is_none());

        let cfg = "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=none\nIPADDR=192.0.2.8\nNETMASK=255.255.255.0\nGATEWAY=192.0.2.1\nDNS1=192.0.2.53\n";
        let s = parse_ifcfg(cfg, "/x", "ifcfg-eth0");
        assert_eq!(s.addresses, vec!["192.0.2.8/24"]);
        assert_eq!(s.mac.as_deref(), Some("52:54:00:12:34:56"));
    }

    #[test]
    fn generated_configs_have_no_mac_and_cover_the_target() {
        let names = nic_names("enp0s3");
        let st = StaticInterface {
            addresses: vec!["192.0.2.10/24".into()],
            gateway: Some("192.0.2.1".into()),
            dns: vec!["192.0.2.53".into()],
            mac: Some("52:54:00:aa:bb:cc".into()),
            ..Default::default()
        };
        for g in [gen_ifupdown, gen_netplan, gen_networkd, gen_nm, gen_ifcfg] {
            let d = g(&names, None);
            assert!(d.starts_with(MARKER) && d.contains("enp0s3") && !d.contains("52:54:00"));
            let s = g(&names, Some(&st));
            assert!(s.contains("192.0.2.10") && s.contains("enp0s3") && !s.contains("52:54:00"));
        }
        let back = parse_netplan(&gen_netplan(&names, Some(&st)), "x").unwrap();
        assert_eq!(back[0].gateway.as_deref(), Some("192.0.2.1"));
    }
}
