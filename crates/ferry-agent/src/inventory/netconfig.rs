//! Static or DHCP: reading how the source configures each network interface.
//!
//! The live addresses (from `ip`) cannot tell a static address from a leased one, so the agent reads the
//! configuration files of the network stacks found on Linux servers and turns each into [`IfaceRule`]s:
//!
//! | stack | files (under the inventory root) | what decides |
//! |---|---|---|
//! | netplan | `etc/netplan/*.yaml` | `dhcp4`/`dhcp6`, `addresses` |
//! | NetworkManager | `etc/NetworkManager/system-connections/*.nmconnection` | `[ipv4]`/`[ipv6]` `method`, `addressN` |
//! | systemd-networkd | `etc/systemd/network/*.network` | `DHCP=`, `Address=` |
//! | RHEL network-scripts | `etc/sysconfig/network-scripts/ifcfg-*` | `BOOTPROTO`, `IPADDR` |
//! | ifupdown | `etc/network/interfaces`, `etc/network/interfaces.d/*` | `iface X inet static\|dhcp` |
//!
//! Every parser is a pure function over one file's text. One rule is decided the same way for every stack
//! (see [`decide`]): a configured static IPv4 address makes the interface `Static` (even alongside DHCP,
//! because that address must be kept on record for the target), else IPv4 DHCP makes it `Dhcp`, else IPv6
//! decides the same way. A file that configures no addressing (a bond member, `manual`) yields no rule.
//!
//! When several files match one interface, the first wins, with the stacks in the order of the table above
//! (netplan generates the others' files, so it is the most authoritative) and files in lexical order
//! within a stack (as systemd-networkd itself does). Unreadable files and parse errors are logged and skipped.

use std::path::{Path, PathBuf};

use ferry_types::inventory::AddrConfig;
use tracing::warn;

/// Which interfaces a rule applies to. Empty lists do not constrain; a non-empty list matches when any of its
/// entries does; both lists must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceMatch {
    /// Interface names; shell globs (`en*`, `eth[01]`) are allowed.
    pub names: Vec<String>,
    /// MAC addresses, any case, `:` or `-` separated.
    pub macs: Vec<String>,
}

impl IfaceMatch {
    fn name(name: &str) -> Self {
        IfaceMatch {
            names: vec![name.to_owned()],
            macs: Vec::new(),
        }
    }

    /// Whether an interface called `name` with hardware address `mac` is selected.
    pub fn matches(&self, name: &str, mac: Option<&str>) -> bool {
        let name_ok = self.names.is_empty() || self.names.iter().any(|g| glob_match(g, name));
        let mac_ok = self.macs.is_empty()
            || mac.is_some_and(|m| {
                self.macs
                    .iter()
                    .any(|x| normalize_mac(x) == normalize_mac(m))
            });
        name_ok && mac_ok
    }
}

/// What one configuration file says about some interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceRule {
    pub matcher: IfaceMatch,
    pub config: AddrConfig,
}

/// The addressing a configuration asks for, per IP family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addressing {
    pub v4_static: bool,
    pub v4_dhcp: bool,
    pub v6_static: bool,
    pub v6_dhcp: bool,
}

/// The one rule every parser uses to turn addressing into Static or DHCP; `None` when nothing is configured.
pub fn decide(a: Addressing) -> Option<AddrConfig> {
    if a.v4_static {
        Some(AddrConfig::Static)
    } else if a.v4_dhcp {
        Some(AddrConfig::Dhcp)
    } else if a.v6_static {
        Some(AddrConfig::Static)
    } else if a.v6_dhcp {
        Some(AddrConfig::Dhcp)
    } else {
        None
    }
}

fn is_v6_address(address: &str) -> bool {
    address.contains(':')
}

fn normalize_mac(mac: &str) -> String {
    mac.trim().to_ascii_lowercase().replace('-', ":")
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "on" | "1" | "y"
    )
}

/// Shell-style glob match supporting `*`, `?` and `[...]` (with `!`/`^` negation and ranges).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_from(&p, &t)
}

fn glob_from(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|skip| glob_from(&p[1..], &t[skip..])),
        Some('?') => !t.is_empty() && glob_from(&p[1..], &t[1..]),
        Some('[') => {
            let Some(&c) = t.first() else { return false };
            match class_match(&p[1..], c) {
                Some((matched, rest)) => matched && glob_from(rest, &t[1..]),
                // An unterminated class is a literal '['.
                None => c == '[' && glob_from(&p[1..], &t[1..]),
            }
        }
        Some(&lit) => t.first() == Some(&lit) && glob_from(&p[1..], &t[1..]),
    }
}

/// Matches `c` against a class body starting after `[`; returns whether it matched and the pattern after `]`.
fn class_match(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut i) = match p.first() {
        Some('!') | Some('^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negated, &p[i + 1..]));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Parses ifupdown's interfaces(5): `iface NAME inet|inet6 METHOD` stanzas. One rule per interface name,
/// in order of first appearance.
pub fn parse_ifupdown(text: &str) -> Vec<IfaceRule> {
    let mut per_iface: Vec<(String, Addressing)> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if words.len() < 4 || words[0] != "iface" {
            continue;
        }
        let (name, family, method) = (words[1], words[2], words[3]);
        let index = match per_iface.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                per_iface.push((name.to_owned(), Addressing::default()));
                per_iface.len() - 1
            }
        };
        let a = &mut per_iface[index].1;
        match (family, method) {
            ("inet", "static") => a.v4_static = true,
            ("inet", "dhcp") | ("inet", "bootp") => a.v4_dhcp = true,
            ("inet6", "static") | ("inet6", "v4tunnel") => a.v6_static = true,
            ("inet6", "dhcp") | ("inet6", "auto") => a.v6_dhcp = true,
            _ => {}
        }
    }
    per_iface
        .into_iter()
        .filter_map(|(name, a)| {
            decide(a).map(|config| IfaceRule {
                matcher: IfaceMatch::name(&name),
                config,
            })
        })
        .collect()
}

/// Why a netplan file could not be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "netplan file is not valid YAML: fix it (netplan would reject it too) or the interface stays Unknown"
)]
pub struct NetplanError(#[source] serde_yaml_ng::Error);

/// Parses one netplan YAML file: every device under `network.<section>.<id>` (ethernets, bonds, bridges,
/// vlans, wifis, ...). Devices with a `match:` block are matched by `set-name` (the name they end up with),
/// else `match.name`, plus `match.macaddress`; devices without one by their id.
pub fn parse_netplan(text: &str) -> Result<Vec<IfaceRule>, NetplanError> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(NetplanError)?;
    let mut rules = Vec::new();
    let Some(sections) = doc.get("network").and_then(Value::as_mapping) else {
        return Ok(rules);
    };
    let as_text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    for (_, section) in sections {
        let Some(devices) = section.as_mapping() else {
            continue; // `version: 2`, `renderer: networkd`
        };
        for (id, settings) in devices {
            let Some(id) = as_text(id) else { continue };
            let flag = |key: &str| {
                settings
                    .get(key)
                    .and_then(as_text)
                    .is_some_and(|v| truthy(&v))
            };
            let mut a = Addressing {
                v4_dhcp: flag("dhcp4"),
                v6_dhcp: flag("dhcp6"),
                ..Addressing::default()
            };
            if let Some(addresses) = settings.get("addresses").and_then(Value::as_sequence) {
                for entry in addresses {
                    // An address is either "192.0.2.5/24" or a mapping {"192.0.2.5/24": {lifetime: ...}}.
                    let address = match entry {
                        Value::Mapping(m) => m.keys().next().and_then(as_text),
                        other => as_text(other),
                    };
                    if let Some(address) = address {
                        if is_v6_address(&address) {
                            a.v6_static = true;
                        } else {
                            a.v4_static = true;
                        }
                    }
                }
            }
            let Some(config) = decide(a) else { continue };
            let matcher = match settings.get("match") {
                Some(m) => {
                    let names = settings
                        .get("set-name")
                        .and_then(as_text)
                        .or_else(|| m.get("name").and_then(as_text))
                        .into_iter()
                        .collect();
                    let macs = m.get("macaddress").and_then(as_text).into_iter().collect();
                    IfaceMatch { names, macs }
                }
                None => IfaceMatch::name(&id),
            };
            rules.push(IfaceRule { matcher, config });
        }
    }
    Ok(rules)
}

/// Splits an INI-style file (systemd units, NetworkManager keyfiles) into `(section, key, value)` triples.
fn ini_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

/// Parses one systemd-networkd `.network` file: `[Match] Name=`/`MACAddress=`, `[Network] DHCP=` and
/// `Address=`, `[Address] Address=`. A file without `[Match]` entries applies to every interface, as in
/// systemd.network(5).
pub fn parse_networkd(text: &str) -> Option<IfaceRule> {
    let mut matcher = IfaceMatch::default();
    let mut a = Addressing::default();
    for (section, key, value) in ini_entries(text) {
        match (section.as_str(), key.as_str()) {
            ("Match", "Name") => matcher
                .names
                .extend(value.split_whitespace().map(str::to_owned)),
            ("Match", "MACAddress") | ("Match", "PermanentMACAddress") => matcher
                .macs
                .extend(value.split_whitespace().map(str::to_owned)),
            ("Network", "DHCP") => match value.to_ascii_lowercase().as_str() {
                "ipv4" => a.v4_dhcp = true,
                "ipv6" => a.v6_dhcp = true,
                v if truthy(v) || v == "both" => {
                    a.v4_dhcp = true;
                    a.v6_dhcp = true;
                }
                _ => {}
            },
            ("Network", "Address") | ("Address", "Address") => {
                if is_v6_address(&value) {
                    a.v6_static = true;
                } else {
                    a.v4_static = true;
                }
            }
            _ => {}
        }
    }
    decide(a).map(|config| IfaceRule { matcher, config })
}

/// Parses one NetworkManager keyfile (`.nmconnection`): `[connection] interface-name=`,
/// `[ethernet] mac-address=`, `[ipv4]`/`[ipv6] method=` and `addressN=`. A connection without an
/// interface name or MAC applies to any device, as NetworkManager treats it.
pub fn parse_nmconnection(text: &str) -> Option<IfaceRule> {
    let mut matcher = IfaceMatch::default();
    let mut a = Addressing::default();
    for (section, key, value) in ini_entries(text) {
        match (section.as_str(), key.as_str()) {
            ("connection", "interface-name") if !value.is_empty() => matcher.names.push(value),
            ("ethernet", "mac-address") | ("802-3-ethernet", "mac-address")
                if !value.is_empty() =>
            {
                matcher.macs.push(value)
            }
            ("ipv4", "method") => match value.as_str() {
                "manual" => a.v4_static = true,
                "auto" => a.v4_dhcp = true,
                _ => {}
            },
            ("ipv6", "method") => match value.as_str() {
                "manual" => a.v6_static = true,
                "auto" | "dhcp" => a.v6_dhcp = true,
                _ => {}
            },
            ("ipv4", k) if k.starts_with("address") && !value.is_empty() => a.v4_static = true,
            ("ipv6", k) if k.starts_with("address") && !value.is_empty() => a.v6_static = true,
            _ => {}
        }
    }
    decide(a).map(|config| IfaceRule { matcher, config })
}

/// Parses one RHEL `ifcfg-*` file. `file_name` (`ifcfg-eth0`) names the device when `DEVICE=` is absent.
/// `BOOTPROTO=dhcp|bootp` is DHCP; `static`/`none` (or no BOOTPROTO) with an `IPADDR`/`IPADDRn` is static;
/// `IPV6ADDR` is static IPv6 and `DHCPV6C=yes` or `IPV6_AUTOCONF=yes` is IPv6 DHCP.
pub fn parse_ifcfg(text: &str, file_name: &str) -> Option<IfaceRule> {
    let mut device = file_name.strip_prefix("ifcfg-").map(str::to_owned);
    let mut macs = Vec::new();
    let mut a = Addressing::default();
    let mut bootproto = String::new();
    let mut has_ipaddr = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "DEVICE" if !value.is_empty() => device = Some(value),
            "HWADDR" if !value.is_empty() => macs.push(value),
            "BOOTPROTO" => bootproto = value.to_ascii_lowercase(),
            k if (k == "IPADDR"
                || (k.starts_with("IPADDR") && k[6..].chars().all(|c| c.is_ascii_digit())))
                && !value.is_empty() =>
            {
                has_ipaddr = true
            }
            "IPV6ADDR" if !value.is_empty() => a.v6_static = true,
            "DHCPV6C" | "IPV6_AUTOCONF" if truthy(&value) => a.v6_dhcp = true,
            _ => {}
        }
    }
    match bootproto.as_str() {
        "dhcp" | "bootp" => a.v4_dhcp = true,
        "" | "static" | "none" => a.v4_static = has_ipaddr,
        _ => {}
    }
    let names: Vec<String> = device.into_iter().filter(|d| d != "lo").collect();
    if names.is_empty() && macs.is_empty() {
        return None;
    }
    decide(a).map(|config| IfaceRule {
        matcher: IfaceMatch { names, macs },
        config,
    })
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_owned();
        }
    }
    v.to_owned()
}

/// A rule together with the file it came from, as that file's path on the source server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedRule {
    pub rule: IfaceRule,
    pub source: String,
}

/// Files in `dir` whose names satisfy `keep`, sorted by name; none (and no log line) if `dir` is absent.
fn files_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            warn!(dir = %dir.display(), error = %err, "cannot list network configuration directory; skipping it");
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(&keep))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Reads every supported network configuration file under `root`, in precedence order.
pub fn gather_rules(root: &Path) -> Vec<SourcedRule> {
    let mut out = Vec::new();
    let on_source = |path: &Path| -> String {
        match path.strip_prefix(root) {
            Ok(rel) => Path::new("/").join(rel).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    };
    let mut add = |path: &Path, parse: &dyn Fn(&str, &str) -> Vec<IfaceRule>| {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                warn!(path = %path.display(), error = %err, "cannot read network configuration file; skipping it");
                return;
            }
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        for rule in parse(&text, name) {
            out.push(SourcedRule {
                rule,
                source: on_source(path),
            });
        }
    };
    for path in files_in(&root.join("etc/netplan"), |n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    }) {
        add(&path, &|text, _| {
            parse_netplan(text).unwrap_or_else(|err| {
                warn!(error = %err, source = ?std::error::Error::source(&err), "skipping netplan file");
                Vec::new()
            })
        });
    }
    for path in files_in(&root.join("etc/NetworkManager/system-connections"), |n| {
        n.ends_with(".nmconnection")
    }) {
        add(&path, &|text, _| {
            parse_nmconnection(text).into_iter().collect()
        });
    }
    for path in files_in(&root.join("etc/systemd/network"), |n| {
        n.ends_with(".network")
    }) {
        add(&path, &|text, _| parse_networkd(text).into_iter().collect());
    }
    for path in files_in(&root.join("etc/sysconfig/network-scripts"), |n| {
        n.starts_with("ifcfg-")
            && !n.ends_with('~')
            && !n.ends_with(".bak")
            && !n.ends_with(".orig")
    }) {
        add(&path, &|text, name| {
            parse_ifcfg(text, name).into_iter().collect()
        });
    }
    add(&root.join("etc/network/interfaces"), &|text, _| {
        parse_ifupdown(text)
    });
    for path in files_in(&root.join("etc/network/interfaces.d"), |n| {
        !n.starts_with('.')
    }) {
        add(&path, &|text, _| parse_ifupdown(text));
    }
    out
}

/// The configuration of interface `name` (with hardware address `mac`): the first matching rule, or
/// `Unknown` with no source.
pub fn resolve(
    rules: &[SourcedRule],
    name: &str,
    mac: Option<&str>,
) -> (AddrConfig, Option<String>) {
    rules
        .iter()
        .find(|r| r.rule.matcher.matches(name, mac))
        .map(|r| (r.rule.config, Some(r.source.clone())))
        .unwrap_or((AddrConfig::Unknown, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        assert!(glob_match("en*", "enp1s0"));
        assert!(!glob_match("en*", "eth0"));
        assert!(glob_match("eth?", "eth1"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("eth[0-2]", "eth2"));
        assert!(!glob_match("eth[!0-2]", "eth2"));
        assert!(glob_match("eth[!0-2]", "eth7"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a[b", "a[b"));
    }

    #[test]
    fn ifupdown_static_dhcp_and_ignored_methods() {
        let text = "auto lo\niface lo inet loopback\n\n\
                    auto eth0\niface eth0 inet static\n    address 192.0.2.10/24\n    gateway 192.0.2.1\n\
                    allow-hotplug eth1\niface eth1 inet dhcp # comment\n\
                    iface eth2 inet manual\n\
                    iface eth3 inet6 auto\n\
                    iface eth1 inet6 static\n";
        let rules = parse_ifupdown(text);
        let find = |n: &str| {
            rules
                .iter()
                .find(|r| r.matcher.matches(n, None))
                .map(|r| r.config)
        };
        assert_eq!(find("eth0"), Some(AddrConfig::Static));
        // IPv4 decides before IPv6.
        assert_eq!(find("eth1"), Some(AddrConfig::Dhcp));
        assert_eq!(find("eth2"), None);
        assert_eq!(find("eth3"), Some(AddrConfig::Dhcp));
        assert_eq!(find("lo"), None);
    }

    #[test]
    fn netplan_ethernets_match_and_addresses() {
        let text = r#"
network:
  version: 2
  renderer: networkd
  ethernets:
    eth0:
      dhcp4: true
    lan:
      match:
        macaddress: "52:54:00:AA:BB:CC"
      set-name: lan0
      addresses:
        - 192.0.2.10/24
      routes:
        - to: default
          via: 192.0.2.1
    eth2:
      dhcp4: no
      dhcp6: yes
    eth3:
      addresses:
        - "2001:db8::5/64":
            lifetime: 0
    eth4: {}
  bonds:
    bond0:
      interfaces: [eth5, eth6]
      dhcp4: "yes"
"#;
        let rules = parse_netplan(text).unwrap_or_else(|e| panic!("{e}"));
        let find = |n: &str, mac: Option<&str>| {
            rules
                .iter()
                .find(|r| r.matcher.matches(n, mac))
                .map(|r| r.config)
        };
        assert_eq!(find("eth0", None), Some(AddrConfig::Dhcp));
        assert_eq!(
            find("lan0", Some("52-54-00-aa-bb-cc")),
            Some(AddrConfig::Static)
        );
        assert_eq!(find("lan0", Some("52:54:00:00:00:01")), None);
        assert_eq!(find("eth2", None), Some(AddrConfig::Dhcp));
        assert_eq!(find("eth3", None), Some(AddrConfig::Static));
        assert_eq!(find("eth4", None), None);
        assert_eq!(find("bond0", None), Some(AddrConfig::Dhcp));
        assert_eq!(rules.len(), 5);
    }

    #[test]
    fn netplan_invalid_yaml_is_an_error_and_empty_is_fine() {
        assert!(parse_netplan("network: [unclosed").is_err());
        assert_eq!(parse_netplan("# nothing\n").map(|r| r.len()).ok(), Some(0));
    }

    #[test]
    fn networkd_match_dhcp_and_address() {
        let dhcp = "[Match]\nName=en* eth0\n\n[Network]\nDHCP=yes\n";
        let rule = parse_networkd(dhcp).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Dhcp);
        assert!(rule.matcher.matches("enp3s0", None));
        assert!(rule.matcher.matches("eth0", None));
        assert!(!rule.matcher.matches("eth1", None));

        let stat = "[Match]\nMACAddress=52:54:00:12:34:56\n[Network]\nDHCP=ipv6\n[Address]\nAddress=10.1.2.3/16\n";
        let rule = parse_networkd(stat).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Static);
        assert!(rule.matcher.matches("anything", Some("52:54:00:12:34:56")));
        assert!(!rule.matcher.matches("anything", None));

        assert_eq!(
            parse_networkd("[Match]\nName=eth9\n[Network]\nDHCP=no\n"),
            None
        );
        let v6 = parse_networkd("[Network]\nDHCP=ipv6\n").unwrap_or_else(|| panic!("no rule"));
        assert_eq!(v6.config, AddrConfig::Dhcp);
        assert!(v6.matcher.matches("whatever", None));
    }

    #[test]
    fn nmconnection_methods() {
        let manual = "[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens3\n\n\
                      [ipv4]\naddress1=192.0.2.7/24,192.0.2.1\nmethod=manual\n\n[ipv6]\nmethod=auto\n";
        let rule = parse_nmconnection(manual).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Static);
        assert_eq!(rule.matcher.names, ["ens3"]);

        let auto = "[connection]\ntype=ethernet\n[ethernet]\nmac-address=52:54:00:01:02:03\n[ipv4]\nmethod=auto\n";
        let rule = parse_nmconnection(auto).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Dhcp);
        assert!(rule.matcher.matches("eth0", Some("52:54:00:01:02:03")));
        assert!(!rule.matcher.matches("eth0", Some("52:54:00:01:02:04")));

        assert_eq!(
            parse_nmconnection(
                "[connection]\ninterface-name=x\n[ipv4]\nmethod=disabled\n[ipv6]\nmethod=ignore\n"
            ),
            None
        );
    }

    #[test]
    fn ifcfg_bootproto() {
        let stat = "DEVICE=\"eth0\"\nBOOTPROTO=none\nIPADDR=192.0.2.20\nPREFIX=24\nONBOOT=yes\n";
        let rule = parse_ifcfg(stat, "ifcfg-eth0").unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Static);
        assert_eq!(rule.matcher.names, ["eth0"]);

        let dhcp = "BOOTPROTO='dhcp'\nHWADDR=52:54:00:AB:CD:EF\n";
        let rule = parse_ifcfg(dhcp, "ifcfg-System_eth1").unwrap_or_else(|| panic!("no rule"));
        assert_eq!(rule.config, AddrConfig::Dhcp);
        assert_eq!(rule.matcher.names, ["System_eth1"]);
        assert!(rule.matcher.macs.iter().any(|m| m == "52:54:00:AB:CD:EF"));

        let aliased = "DEVICE=eth2\nIPADDR1=10.0.0.2\n";
        assert_eq!(
            parse_ifcfg(aliased, "ifcfg-eth2").map(|r| r.config),
            Some(AddrConfig::Static)
        );
        assert_eq!(
            parse_ifcfg("DEVICE=eth3\nBOOTPROTO=none\n", "ifcfg-eth3"),
            None
        );
        assert_eq!(
            parse_ifcfg("DEVICE=lo\nIPADDR=127.0.0.1\n", "ifcfg-lo"),
            None
        );
        let v6 = parse_ifcfg("DEVICE=eth4\nIPV6INIT=yes\nDHCPV6C=yes\n", "ifcfg-eth4");
        assert_eq!(v6.map(|r| r.config), Some(AddrConfig::Dhcp));
    }

    #[test]
    fn gather_and_resolve_in_precedence_order() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("netplan"))?;
        std::fs::create_dir_all(etc.join("network/interfaces.d"))?;
        std::fs::create_dir_all(etc.join("systemd/network"))?;
        std::fs::write(
            etc.join("netplan/50-cloud.yaml"),
            "network:\n  ethernets:\n    eth0:\n      addresses: [192.0.2.4/24]\n",
        )?;
        std::fs::write(
            etc.join("network/interfaces"),
            "iface eth0 inet dhcp\niface eth1 inet dhcp\n",
        )?;
        std::fs::write(
            etc.join("network/interfaces.d/eth2"),
            "iface eth2 inet static\n",
        )?;
        std::fs::write(
            etc.join("systemd/network/10-x.network"),
            "[Match]\nName=eth3\n[Network]\nDHCP=yes\n",
        )?;
        std::fs::write(
            etc.join("systemd/network/20-x.network"),
            "[Match]\nName=eth3\n[Network]\nAddress=10.0.0.3/8\n",
        )?;
        let rules = gather_rules(root.path());
        assert_eq!(
            resolve(&rules, "eth0", None),
            (
                AddrConfig::Static,
                Some("/etc/netplan/50-cloud.yaml".to_owned())
            )
        );
        assert_eq!(
            resolve(&rules, "eth1", None),
            (AddrConfig::Dhcp, Some("/etc/network/interfaces".to_owned()))
        );
        assert_eq!(
            resolve(&rules, "eth2", None),
            (
                AddrConfig::Static,
                Some("/etc/network/interfaces.d/eth2".to_owned())
            )
        );
        assert_eq!(
            resolve(&rules, "eth3", None),
            (
                AddrConfig::Dhcp,
                Some("/etc/systemd/network/10-x.network".to_owned())
            )
        );
        assert_eq!(resolve(&rules, "eth9", None), (AddrConfig::Unknown, None));
        Ok(())
    }
}
