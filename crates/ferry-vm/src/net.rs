//! Instance networking: one virtio NIC on QEMU's user-mode network, isolated, with loopback port forwards.
//!
//! The default network ([`NetworkSpec::default`]) is one `virtio-net-pci` NIC (no option ROM: instances
//! never boot from the network) at PCI slot 3 of the root bus (the guest names it [`TARGET_NIC_NAME`]), with a MAC derived from the instance ID
//! ([`mac_for`]), on QEMU's user-mode network (slirp) with `restrict=on`: the guest gets `10.0.2.15/24`
//! from QEMU's DHCP server and reaches nothing outside the virtual network. The only ways in and out are
//! the rules listed in the spec, which play the part of a security group:
//!
//! - [`PortForward`] (`hostfwd`): a TCP port on a host loopback address forwarded to a guest port;
//! - [`GuestForward`] (`guestfwd`): a TCP address on the virtual network (e.g. `10.0.2.100:7979`) that
//!   QEMU connects to a host loopback listener.
//!
//! Invariants ([`NetworkSpec::check`]): host addresses are IPv4 loopback (`127.0.0.0/8`) with a non-zero
//! port, no host port is forwarded twice, guest-forward addresses lie in `10.0.2.0/24` and are not one of
//! QEMU's own (`.2` gateway, `.3` DNS, `.15` the guest). The spec is recorded in `instance.json`, so the
//! same rules come back when the instance starts again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The guest's name for the target NIC under systemd's predictable naming (bus 0, slot 3).
pub const TARGET_NIC_NAME: &str = "enp0s3";
/// The NIC's PCI slot on the root bus.
pub const NIC_PCI_SLOT: u8 = 3;
/// The user-mode network's subnet, gateway and the address its DHCP server gives the guest.
pub const GUEST_NET: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
pub const GUEST_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const GUEST_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A host loopback port forwarded to a guest TCP port (`hostfwd`): one "security group" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortForward {
    /// Where the host listens: an IPv4 loopback address and a non-zero port, e.g. `127.0.0.1:2222`.
    pub host: SocketAddr,
    /// The guest's TCP port.
    pub guest_port: u16,
}

/// A TCP address on the guest's network that QEMU connects to a host loopback listener (`guestfwd`).
/// QEMU connects to the listener when the instance starts, so it must be listening by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GuestForward {
    /// The address the guest connects to, in `10.0.2.0/24` (e.g. `10.0.2.100:7979`).
    pub guest: SocketAddrV4,
    /// The host listener, IPv4 loopback.
    pub host: SocketAddr,
}

/// An instance's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Whether the instance has a NIC at all (`false`: `-nic none`).
    pub enabled: bool,
    /// Host loopback ports forwarded into the guest.
    #[serde(default)]
    pub forwards: Vec<PortForward>,
    /// Guest addresses forwarded to host loopback listeners.
    #[serde(default)]
    pub guest_forwards: Vec<GuestForward>,
}

impl Default for NetworkSpec {
    /// One NIC on the isolated user-mode network, no forwards.
    fn default() -> Self {
        NetworkSpec {
            enabled: true,
            forwards: Vec::new(),
            guest_forwards: Vec::new(),
        }
    }
}

impl NetworkSpec {
    /// No NIC at all (`-nic none`), as instances of `instance.json` version 1 ran.
    pub fn none() -> NetworkSpec {
        NetworkSpec {
            enabled: false,
            forwards: Vec::new(),
            guest_forwards: Vec::new(),
        }
    }

    /// The isolated NIC with these host → guest forwards.
    pub fn isolated_with(forwards: Vec<PortForward>) -> NetworkSpec {
        NetworkSpec {
            forwards,
            ..NetworkSpec::default()
        }
    }

    /// Checks the invariants in the module doc; the message says which rule is wrong and why.
    pub fn check(&self) -> Result<(), String> {
        if !self.enabled && (!self.forwards.is_empty() || !self.guest_forwards.is_empty()) {
            return Err("port forwards need a NIC: the network is disabled".to_owned());
        }
        let mut host_ports: Vec<SocketAddr> = Vec::new();
        for f in &self.forwards {
            check_loopback(f.host, "port forward")?;
            if f.guest_port == 0 {
                return Err(format!(
                    "port forward {}: guest port 0 is not a port",
                    f.host
                ));
            }
            if host_ports.contains(&f.host) {
                return Err(format!("host address {} is forwarded twice", f.host));
            }
            host_ports.push(f.host);
        }
        let mut guest_addrs: Vec<SocketAddrV4> = Vec::new();
        for g in &self.guest_forwards {
            check_loopback(g.host, "guest forward")?;
            let ip = *g.guest.ip();
            let in_net = ip.octets()[..3] == GUEST_NET.octets()[..3];
            let reserved = [GUEST_NET, GUEST_GATEWAY, GUEST_DNS, GUEST_ADDRESS].contains(&ip)
                || ip.octets()[3] == 255;
            if !in_net || reserved || g.guest.port() == 0 {
                return Err(format!(
                    "guest forward address {} must be a free address of 10.0.2.0/24 (not .0, .2, .3, .15 or .255) with a non-zero port",
                    g.guest
                ));
            }
            if guest_addrs.contains(&g.guest) {
                return Err(format!("guest address {} is forwarded twice", g.guest));
            }
            guest_addrs.push(g.guest);
        }
        Ok(())
    }

    /// QEMU arguments for this network on the instance `id`.
    pub(crate) fn qemu_args(&self, id: &str) -> Vec<String> {
        if !self.enabled {
            return vec!["-nic".to_owned(), "none".to_owned()];
        }
        let mut netdev = String::from("user,id=net0,restrict=on");
        for f in &self.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:{}:{}-:{}",
                f.host.ip(),
                f.host.port(),
                f.guest_port
            ));
        }
        for g in &self.guest_forwards {
            netdev.push_str(&format!(
                ",guestfwd=tcp:{}:{}-tcp:{}:{}",
                g.guest.ip(),
                g.guest.port(),
                g.host.ip(),
                g.host.port()
            ));
        }
        vec![
            "-netdev".to_owned(),
            netdev,
            "-device".to_owned(),
            format!(
                "virtio-net-pci,netdev=net0,mac={},bus=pcie.0,addr={:#x},romfile=",
                mac_for(id),
                NIC_PCI_SLOT
            ),
        ]
    }
}

fn check_loopback(addr: SocketAddr, what: &str) -> Result<(), String> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && addr.port() != 0 => Ok(()),
        _ => Err(format!(
            "{what} host address {addr} is refused: only IPv4 loopback addresses (127.0.0.0/8) with a non-zero port may be forwarded, so an instance is never exposed beyond this host"
        )),
    }
}

/// The instance's MAC address: `52:54:00` (QEMU's locally administered prefix) followed by the first three
/// bytes of the FNV-1a hash of its ID. Stable across restarts and hosts.
pub fn mac_for(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn mac_is_stable_and_local() {
        let a = mac_for("i-abc");
        assert_eq!(a, mac_for("i-abc"));
        assert_ne!(a, mac_for("i-abd"));
        assert!(a.starts_with("52:54:00:") && a.len() == 17, "{a}");
    }

    #[test]
    fn forwards_must_be_loopback_and_unique() {
        let ok = NetworkSpec {
            forwards: vec![PortForward {
                host: lo(2222),
                guest_port: 22,
            }],
            guest_forwards: vec![GuestForward {
                guest: SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 100), 7979),
                host: lo(40000),
            }],
            ..NetworkSpec::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let args = ok.qemu_args("i-x").join(" ");
        assert!(
            args.contains("restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,guestfwd=tcp:10.0.2.100:7979-tcp:127.0.0.1:40000"),
            "{args}"
        );
        assert!(args.contains("addr=0x3"), "{args}");

        let mut bad = ok.clone();
        bad.forwards[0].host = SocketAddr::from(([0, 0, 0, 0], 2222));
        assert!(bad.check().is_err_and(|e| e.contains("loopback")));
        let mut bad = ok.clone();
        bad.forwards.push(bad.forwards[0]);
        assert!(bad.check().is_err_and(|e| e.contains("twice")));
        let mut bad = ok.clone();
        bad.guest_forwards[0].guest = SocketAddrV4::new(GUEST_GATEWAY, 80);
        assert!(bad.check().is_err());
        let mut bad = ok.clone();
        bad.guest_forwards[0].host = "[::1]:4000".parse().expect("addr");
        assert!(bad.check().is_err());
        let mut bad = ok;
        bad.enabled = false;
        assert!(bad.check().is_err());
        assert_eq!(NetworkSpec::none().qemu_args("i-x"), ["-nic", "none"]);
    }
}
