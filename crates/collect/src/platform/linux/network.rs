//! `hardware/network` from `/sys/class/net`, with addresses from `getifaddrs` (netlink).
//!
//! On a fixture root there is no kernel to ask, so addresses come from the tree's
//! `/proc/net/if_inet6`, which has IPv6 only: procfs lists no IPv4 address per interface (only
//! `fib_trie`, which does not name interfaces), so fixture interfaces have no IPv4 addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use muster_proto::data::{IpAddress, NetworkInterface};
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

/// One line of `/proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfInet6 {
    pub address: Ipv6Addr,
    pub ifindex: u32,
    pub prefix_len: u8,
    /// `IPV6_ADDR_*` scope bits: 0x00 global, 0x10 host, 0x20 link, 0x40 site.
    pub scope: u32,
    /// `IFA_F_*` flags (0x80 permanent, 0x40 tentative, 0x20 deprecated, ...).
    pub flags: u32,
    pub name: String,
}

fn hex_u32(text: &str) -> Option<u32> {
    // from_str_radix takes a leading sign, the kernel never writes one.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

fn parse_if_inet6_line(line: &str) -> Option<IfInet6> {
    let mut fields = line.split_whitespace();
    let address = fields.next()?;
    if address.len() != 32 || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let address = Ipv6Addr::from(u128::from_str_radix(address, 16).ok()?);
    let ifindex = hex_u32(fields.next()?)?;
    let prefix_len = u8::try_from(hex_u32(fields.next()?)?)
        .ok()
        .filter(|&p| p <= 128)?;
    let scope = hex_u32(fields.next()?)?;
    let flags = hex_u32(fields.next()?)?;
    let name = fields.next()?.to_owned();
    Some(IfInet6 {
        address,
        ifindex,
        prefix_len,
        scope,
        flags,
        name,
    })
}

/// Parses `/proc/net/if_inet6`: address (32 hex digits), interface index, prefix length, scope
/// and flags (hex), interface name. Malformed lines are skipped.
pub fn parse_if_inet6(text: &str) -> Vec<IfInet6> {
    text.lines().filter_map(parse_if_inet6_line).collect()
}

/// A hardware address from sysfs `address`, lowercased; `None` when empty or all zeros (the
/// loopback device, tunnels), as those identify nothing.
pub fn parse_mac(text: &str) -> Option<String> {
    let mac = text.trim();
    let zero = mac.bytes().all(|b| b == b'0' || b == b':');
    (!zero).then(|| mac.to_ascii_lowercase())
}

/// Link speed from sysfs `speed`, in Mbit/s. Drivers report an unknown speed as -1, or on
/// older kernels as its unsigned 32- or 16-bit form.
pub fn parse_speed(text: &str) -> Option<u64> {
    let speed: i64 = text.trim().parse().ok()?;
    match speed {
        ..=0 | 65_535 | 4_294_967_295 => None,
        speed => u64::try_from(speed).ok(),
    }
}

/// The prefix length a contiguous netmask stands for.
pub fn prefix_len(netmask: IpAddr) -> u8 {
    let ones = match netmask {
        IpAddr::V4(mask) => u32::from(mask).leading_ones(),
        IpAddr::V6(mask) => u128::from(mask).leading_ones(),
    };
    // At most 128, so it fits.
    u8::try_from(ones).unwrap_or(u8::MAX)
}

fn ip_of(address: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

/// Every IPv4 and IPv6 address of the running system, with the name `getifaddrs` gives it
/// (for IPv4, the address label, e.g. `eth0:1`).
fn live_addresses() -> Result<Vec<(String, IpAddress)>, CollectError> {
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|e| CollectError::Other(format!("getifaddrs: {e}")))?;
    Ok(addresses
        .filter_map(|entry| {
            let address = ip_of(entry.address.as_ref()?)?;
            let prefix_len = match entry.netmask.as_ref().and_then(ip_of) {
                Some(mask) => prefix_len(mask),
                None if address.is_ipv4() => 32,
                None => 128,
            };
            let address = IpAddress {
                address,
                prefix_len,
            };
            Some((entry.interface_name, address))
        })
        .collect())
}

/// The IPv6 addresses of a fixture tree's `/proc/net/if_inet6` (absent when IPv6 is off).
fn fixture_addresses(context: &Context) -> Result<Vec<(String, IpAddress)>, CollectError> {
    let text = context.read_optional("/proc/net/if_inet6")?;
    Ok(parse_if_inet6(text.as_deref().unwrap_or_default())
        .into_iter()
        .map(|line| {
            let address = IpAddress {
                address: IpAddr::V6(line.address),
                prefix_len: line.prefix_len,
            };
            (line.name, address)
        })
        .collect())
}

fn read_interface(context: &Context, name: String) -> NetworkInterface {
    let attr = |file: &str| context.attr(format!("/sys/class/net/{name}/{file}"));
    NetworkInterface {
        mac: attr("address").and_then(|a| parse_mac(&a)),
        mtu: attr("mtu").and_then(|m| m.parse().ok()),
        oper_state: attr("operstate").map_or_else(|| "unknown".to_owned(), |s| s.to_lowercase()),
        // Reading `speed` fails with EINVAL while the link is down, which leaves it `None`.
        speed_mbps: attr("speed").and_then(|s| parse_speed(&s)),
        addresses: Vec::new(),
        name,
    }
}

/// The interfaces under the context's `/sys/class/net`, sorted by name, without addresses.
/// Entries that are not directories (`bonding_masters`) are not interfaces.
pub fn read_interfaces(context: &Context) -> Result<Vec<NetworkInterface>, CollectError> {
    let dir = context.path("/sys/class/net");
    let entries = std::fs::read_dir(&dir).map_err(|e| CollectError::io(&dir, e))?;
    let mut interfaces: Vec<NetworkInterface> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // Follows the sysfs symlink to the device directory.
            std::fs::metadata(entry.path())
                .ok()?
                .is_dir()
                .then_some(())?;
            entry.file_name().into_string().ok()
        })
        .map(|name| read_interface(context, name))
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(interfaces)
}

/// Gives each interface its addresses, sorted. An IPv4 label that names no interface
/// (`eth0:1`) belongs to the interface before the colon; addresses of interfaces that are not
/// listed are dropped.
pub fn assign_addresses(interfaces: &mut [NetworkInterface], addresses: Vec<(String, IpAddress)>) {
    let index: HashMap<String, usize> = interfaces
        .iter()
        .enumerate()
        .map(|(i, interface)| (interface.name.clone(), i))
        .collect();
    for (name, address) in addresses {
        let found = index.get(&name).or_else(|| {
            let (base, _) = name.split_once(':')?;
            index.get(base)
        });
        if let Some(interface) = found.and_then(|&i| interfaces.get_mut(i)) {
            interface.addresses.push(address);
        }
    }
    for interface in interfaces {
        interface.addresses.sort();
    }
}

pub fn collect(context: &Context) -> Collected {
    let mut interfaces = read_interfaces(context)?;
    let addresses = if context.is_live() {
        live_addresses()
    } else {
        fixture_addresses(context)
    };
    // Interfaces without their addresses still say something; keep them next to the error.
    let error = match addresses {
        Ok(addresses) => {
            assign_addresses(&mut interfaces, addresses);
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let mut report = FunctionReport::new(FunctionData::Network(interfaces));
    report.error = error;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    const IF_INET6: &str = include_str!("../../../tests/fixtures/hardware-b/if_inet6");

    fn netmask_v4(prefix: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
    }

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    fn ip(address: &str, prefix_len: u8) -> IpAddress {
        IpAddress {
            address: address.parse().unwrap(),
            prefix_len,
        }
    }

    #[test]
    fn parses_if_inet6() {
        let lines = parse_if_inet6(IF_INET6);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            IfInet6 {
                address: "fe80::9a2e:1cff:fe3a:4b5c".parse().unwrap(),
                ifindex: 2,
                prefix_len: 64,
                scope: 0x20,
                flags: 0x80,
                name: "enp3s0".into(),
            }
        );
        assert_eq!(lines[1].address, "::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((lines[1].prefix_len, lines[1].name.as_str()), (128, "lo"));
        assert_eq!(
            lines[2].address,
            "2a01:4f8:c2c:1234::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(lines[4].ifindex, 0x1a);
        assert_eq!(lines[4].name, "br-3f2a1b0c9d8e");
    }

    #[test]
    fn if_inet6_skips_malformed_lines() {
        let text = "fe80 02 40 20 80 eth0\n\
            fe80000000000000000000000000000g 02 40 20 80 eth0\n\
            fe800000000000000000000000000001 02 81 20 80 eth0\n\
            fe800000000000000000000000000001 02 40 20 80\n\
            +e800000000000000000000000000001 02 40 20 80 eth0\n\
            fe800000000000000000000000000001 02 40 20 80 eth1\n";
        let lines = parse_if_inet6(text);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].name, "eth1");
    }

    #[test]
    fn macs_speeds_and_prefixes() {
        assert_eq!(
            parse_mac("98:2E:1C:3A:4B:5C\n").as_deref(),
            Some("98:2e:1c:3a:4b:5c")
        );
        assert_eq!(parse_mac("00:00:00:00:00:00"), None);
        assert_eq!(parse_mac(""), None);
        assert_eq!(parse_speed("1000\n"), Some(1000));
        assert_eq!(parse_speed("100000"), Some(100_000));
        for unknown in ["-1", "0", "65535", "4294967295", "", "fast"] {
            assert_eq!(parse_speed(unknown), None, "{unknown}");
        }
        assert_eq!(prefix_len(IpAddr::V4(netmask_v4(24))), 24);
        assert_eq!(prefix_len(IpAddr::V4(netmask_v4(0))), 0);
        assert_eq!(prefix_len(IpAddr::V4(netmask_v4(32))), 32);
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::".parse().unwrap()), 64);
        assert_eq!(
            prefix_len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            128
        );
    }

    #[test]
    fn labels_go_to_their_interface() {
        let mut interfaces = vec![
            read_interface(&Context::new("/nonexistent"), "eth0".into()),
            read_interface(&Context::new("/nonexistent"), "lo".into()),
        ];
        assign_addresses(
            &mut interfaces,
            vec![
                ("eth0".into(), ip("fe80::1", 64)),
                ("eth0:1".into(), ip("10.0.0.2", 8)),
                ("eth0".into(), ip("10.0.0.1", 8)),
                ("lo".into(), ip("127.0.0.1", 8)),
                ("gone".into(), ip("192.0.2.1", 24)),
            ],
        );
        assert_eq!(
            interfaces[0].addresses,
            [ip("10.0.0.1", 8), ip("10.0.0.2", 8), ip("fe80::1", 64)]
        );
        assert_eq!(interfaces[1].addresses, [ip("127.0.0.1", 8)]);
        assert_eq!(interfaces[0].oper_state, "unknown");
    }

    #[test]
    fn reads_a_fixture_sys_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/class/net/enp3s0/address", "98:2E:1C:3A:4B:5C\n");
        write(root, "sys/class/net/enp3s0/mtu", "1500\n");
        write(root, "sys/class/net/enp3s0/operstate", "up\n");
        write(root, "sys/class/net/enp3s0/speed", "1000\n");
        write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        write(root, "sys/class/net/lo/mtu", "65536\n");
        write(root, "sys/class/net/lo/operstate", "unknown\n");
        // A down link: `speed` cannot be read (EINVAL on a real system; here, a directory).
        write(root, "sys/class/net/wlp2s0/address", "a4:c3:f0:11:22:33\n");
        write(root, "sys/class/net/wlp2s0/mtu", "1500\n");
        write(root, "sys/class/net/wlp2s0/operstate", "DOWN\n");
        std::fs::create_dir_all(root.join("sys/class/net/wlp2s0/speed")).unwrap();
        // A WireGuard tunnel: no hardware address.
        write(root, "sys/class/net/wg0/address", "\n");
        write(root, "sys/class/net/wg0/mtu", "1420\n");
        write(root, "sys/class/net/wg0/operstate", "unknown\n");
        write(root, "sys/class/net/bonding_masters", "bond0\n");
        write(root, "proc/net/if_inet6", IF_INET6);

        let report = collect(&Context::new(root)).unwrap().unwrap();
        assert_eq!(report.error, None);
        let FunctionData::Network(interfaces) = report.data else {
            panic!("wrong variant");
        };
        assert_eq!(
            interfaces,
            [
                NetworkInterface {
                    name: "enp3s0".into(),
                    mac: Some("98:2e:1c:3a:4b:5c".into()),
                    mtu: Some(1500),
                    oper_state: "up".into(),
                    speed_mbps: Some(1000),
                    addresses: vec![
                        ip("2a01:4f8:c2c:1234::1", 64),
                        ip("fe80::9a2e:1cff:fe3a:4b5c", 64),
                    ],
                },
                NetworkInterface {
                    name: "lo".into(),
                    mac: None,
                    mtu: Some(65536),
                    oper_state: "unknown".into(),
                    speed_mbps: None,
                    addresses: vec![ip("::1", 128)],
                },
                NetworkInterface {
                    name: "wg0".into(),
                    mac: None,
                    mtu: Some(1420),
                    oper_state: "unknown".into(),
                    speed_mbps: None,
                    addresses: vec![ip("fd00:abcd::2", 128)],
                },
                NetworkInterface {
                    name: "wlp2s0".into(),
                    mac: Some("a4:c3:f0:11:22:33".into()),
                    mtu: Some(1500),
                    oper_state: "down".into(),
                    speed_mbps: None,
                    addresses: vec![],
                },
            ]
        );
    }

    #[test]
    fn a_missing_sys_class_net_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(collect(&Context::new(dir.path())).is_err());
    }

    /// The oracle: the live interfaces and their addresses are exactly what `ip -j addr` shows.
    #[test]
    fn live_matches_ip_addr() {
        let output = std::process::Command::new("ip")
            .args(["-j", "addr"])
            .output()
            .expect("ip (iproute2) runs");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut expected: Vec<(String, Vec<IpAddress>)> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|link| {
                let name = link["ifname"].as_str().unwrap().to_owned();
                let mut addresses: Vec<IpAddress> = link["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| IpAddress {
                        address: a["local"].as_str().unwrap().parse().unwrap(),
                        prefix_len: u8::try_from(a["prefixlen"].as_u64().unwrap()).unwrap(),
                    })
                    .collect();
                addresses.sort();
                (name, addresses)
            })
            .collect();
        expected.sort();

        let report = collect(&Context::default()).unwrap().unwrap();
        assert_eq!(report.error, None);
        let FunctionData::Network(interfaces) = report.data else {
            panic!("wrong variant");
        };
        let actual: Vec<_> = interfaces
            .iter()
            .map(|i| (i.name.clone(), i.addresses.clone()))
            .collect();
        assert_eq!(actual, expected);
        let lo = interfaces.iter().find(|i| i.name == "lo").unwrap();
        assert_eq!((lo.mac.as_deref(), lo.speed_mbps), (None, None));
    }

    proptest! {
        #[test]
        fn if_inet6_never_panics(text in "\\PC*") {
            let _ = parse_if_inet6(&text);
        }

        #[test]
        fn if_inet6_never_panics_on_like_lines(lines in proptest::collection::vec(
            "[0-9a-f+]{30,34} [0-9a-f]{1,9} [0-9a-f]{1,3} [0-9a-f]{2} [0-9a-f]{2} +[a-z0-9]{0,6}",
            0..6)) {
            let _ = parse_if_inet6(&lines.join("\n"));
        }

        #[test]
        fn mac_and_speed_never_panic(text in "\\PC{0,24}") {
            let _ = parse_mac(&text);
            let _ = parse_speed(&text);
        }

        #[test]
        fn prefix_len_round_trips(prefix in 0u8..=32) {
            prop_assert_eq!(prefix_len(IpAddr::V4(netmask_v4(prefix))), prefix);
        }
    }
}
