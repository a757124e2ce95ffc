//! Live network state: interfaces, their addresses and the default gateway.
//!
//! `ip -j addr` and `ip -j route` (iproute2) are the source; without them, interface names, MACs and MTUs come
//! from /sys/class/net and the IPv4 gateway from /proc/net/route, and addresses stay empty. Loopback
//! interfaces and link-local/host-scope addresses are left out: they are not configuration the target needs.
//! Whether an interface is static or DHCP is not visible here; [`super::netconfig`] decides that.

use std::path::Path;

use serde::Deserialize;
use tracing::warn;

use super::tools;

/// One interface as the kernel sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveIface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// CIDR addresses with global (or site) scope.
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
    mtu: Option<u32>,
    link_type: Option<String>,
    address: Option<String>,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct IpAddr {
    local: Option<String>,
    prefixlen: Option<u8>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct IpRoute {
    dst: Option<String>,
    gateway: Option<String>,
}

/// Parses `ip -j addr` output, dropping loopback interfaces and link- or host-scope addresses.
pub fn parse_ip_addr_json(text: &str) -> Result<Vec<LiveIface>, serde_json::Error> {
    let links: Vec<IpLink> = serde_json::from_str(text)?;
    Ok(links
        .into_iter()
        .filter(|l| l.link_type.as_deref() != Some("loopback"))
        .map(|l| LiveIface {
            mac: l
                .address
                .filter(|a| !a.is_empty() && a.chars().any(|c| c != '0' && c != ':')),
            mtu: l.mtu,
            addresses: l
                .addr_info
                .into_iter()
                .filter(|a| !matches!(a.scope.as_deref(), Some("link") | Some("host")))
                .filter_map(|a| Some(format!("{}/{}", a.local?, a.prefixlen?)))
                .collect(),
            name: l.ifname,
        })
        .collect())
}

/// The gateway of the first default route in `ip -j route` output.
pub fn parse_ip_route_json(text: &str) -> Result<Option<String>, serde_json::Error> {
    let routes: Vec<IpRoute> = serde_json::from_str(text)?;
    Ok(routes
        .into_iter()
        .filter(|r| r.dst.as_deref() == Some("default"))
        .find_map(|r| r.gateway))
}

/// The IPv4 default gateway from /proc/net/route.
pub fn parse_proc_net_route(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(fields[2], 16).ok()?;
        // The kernel prints the network-order address as a host-order integer: its native bytes are the
        // address bytes.
        (gw != 0).then(|| std::net::Ipv4Addr::from(gw.to_ne_bytes()).to_string())
    })
}

/// Interfaces and default gateway (IPv4 preferred, else IPv6) of the running system.
pub(crate) fn live() -> (Vec<LiveIface>, Option<String>) {
    let ifaces = match tools::run("ip", ["-j", "addr"]) {
        Ok(json) => parse_ip_addr_json(&json).unwrap_or_else(|err| {
            warn!(error = %err, "cannot parse `ip -j addr` output; falling back to /sys/class/net");
            sysfs_ifaces()
        }),
        Err(err) => {
            warn!(error = %err, "cannot list addresses with `ip`; interfaces come from /sys/class/net without addresses");
            sysfs_ifaces()
        }
    };
    let mut gateway = None;
    for family in ["-4", "-6"] {
        match tools::run("ip", ["-j", family, "route", "show", "default"]) {
            Ok(json) => match parse_ip_route_json(&json) {
                Ok(Some(gw)) => {
                    gateway = Some(gw);
                    break;
                }
                Ok(None) => {}
                Err(err) => warn!(error = %err, "cannot parse `ip -j route` output"),
            },
            Err(err) => {
                warn!(error = %err, "cannot read routes with `ip`; trying /proc/net/route");
                gateway = std::fs::read_to_string("/proc/net/route")
                    .ok()
                    .and_then(|t| parse_proc_net_route(&t));
                break;
            }
        }
    }
    (ifaces, gateway)
}

fn sysfs_ifaces() -> Vec<LiveIface> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        warn!("cannot list /sys/class/net; no network interfaces in the inventory");
        return Vec::new();
    };
    let mut out: Vec<LiveIface> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let dir = e.path();
            let read = |f: &str| {
                std::fs::read_to_string(Path::new(&dir).join(f))
                    .ok()
                    .map(|s| s.trim().to_owned())
            };
            // ARPHRD_LOOPBACK
            if read("type").as_deref() == Some("772") {
                return None;
            }
            Some(LiveIface {
                mac: read("address")
                    .filter(|a| !a.is_empty() && a.chars().any(|c| c != '0' && c != ':')),
                mtu: read("mtu").and_then(|m| m.parse().ok()),
                addresses: Vec::new(),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addr_json() {
        let text = r#"[{"ifindex":1,"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00",
            "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
          {"ifindex":4,"ifname":"eth0","mtu":1400,"link_type":"ether","address":"02:fc:00:00:00:01",
            "addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"scope":"global"},
                         {"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global"},
                         {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
          {"ifindex":5,"ifname":"tun0","link_type":"none","addr_info":[]}]"#;
        let ifaces = parse_ip_addr_json(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ifaces.len(), 2);
        assert_eq!(ifaces[0].name, "eth0");
        assert_eq!(ifaces[0].mac.as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(ifaces[0].mtu, Some(1400));
        assert_eq!(ifaces[0].addresses, ["192.0.2.2/24", "fd00::2/64"]);
        assert_eq!(ifaces[1].mac, None);
        assert!(parse_ip_addr_json("not json").is_err());
    }

    #[test]
    fn ip_route_json_default_gateway() {
        let text = r#"[{"dst":"192.0.2.0/24","dev":"eth0"},{"dst":"default","dev":"wg0"},
                       {"dst":"default","gateway":"192.0.2.1","dev":"eth0"}]"#;
        assert_eq!(
            parse_ip_route_json(text).ok().flatten().as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(parse_ip_route_json("[]").ok().flatten(), None);
    }

    #[test]
    fn proc_net_route_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(parse_proc_net_route(text).as_deref(), Some("192.0.2.1"));
        assert_eq!(parse_proc_net_route("Iface\tDestination\n"), None);
    }
}
