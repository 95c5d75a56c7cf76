//! `hardware/network`: the adapters from `GetAdaptersAddresses`: friendly name, MAC, MTU,
//! state, link speed and unicast addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use muster_proto::data::{IpAddress, NetworkInterface};
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, ERROR_SUCCESS};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER, GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses,
    IP_ADAPTER_ADDRESSES_LH,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, AF_UNSPEC, SOCKET_ADDRESS};

use super::win::{from_wide_ptr, os_error, win32_error};
use crate::{CollectError, Collected, Context};

/// `IF_OPER_STATUS` in the kernel's operstate words.
pub fn oper_state(status: i32) -> &'static str {
    match status {
        1 => "up",
        2 => "down",
        3 => "testing",
        5 => "dormant",
        6 => "notpresent",
        7 => "lowerlayerdown",
        _ => "unknown",
    }
}

/// `aa:bb:cc:dd:ee:ff`; `None` for adapters without a hardware address.
pub fn format_mac(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() || bytes.iter().all(|&b| b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The address in a `sockaddr_in` / `sockaddr_in6`, read from its bytes (family at 0, the
/// IPv4 address at 4, the IPv6 address at 8).
pub fn parse_sockaddr(bytes: &[u8]) -> Option<IpAddr> {
    let family = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?);
    if family == AF_INET {
        let a: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if family == AF_INET6 {
        let a: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

/// # Safety
/// `address.lpSockaddr` is null or points to `iSockaddrLength` readable bytes.
unsafe fn socket_address(address: &SOCKET_ADDRESS) -> Option<IpAddr> {
    if address.lpSockaddr.is_null() || address.iSockaddrLength <= 0 {
        return None;
    }
    // SAFETY: the caller promises the sockaddr is readable for its stated length.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            address.lpSockaddr.cast::<u8>(),
            address.iSockaddrLength as usize,
        )
    };
    parse_sockaddr(bytes)
}

/// `GetAdaptersAddresses`' linked list, in a buffer that is grown until it fits.
fn adapters_buffer() -> Result<Vec<u64>, CollectError> {
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    let mut len: u32 = 16 * 1024;
    for _ in 0..4 {
        // u64 words keep the structures aligned.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buf` has room for `len` bytes; the call writes at most that many and
        // updates `len` when it needs more.
        let code = unsafe {
            GetAdaptersAddresses(
                u32::from(AF_UNSPEC),
                flags,
                std::ptr::null(),
                buf.as_mut_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>(),
                &mut len,
            )
        };
        match code {
            ERROR_SUCCESS => return Ok(buf),
            ERROR_BUFFER_OVERFLOW => continue,
            // ERROR_NO_DATA: no adapters at all.
            232 => return Ok(Vec::new()),
            other => return Err(os_error("GetAdaptersAddresses", win32_error(other))),
        }
    }
    Err(CollectError::Other(
        "GetAdaptersAddresses: the adapter list kept growing".to_owned(),
    ))
}

pub fn interfaces() -> Result<Vec<NetworkInterface>, CollectError> {
    let buf = adapters_buffer()?;
    let mut interfaces = Vec::new();
    let mut next = if buf.is_empty() {
        std::ptr::null()
    } else {
        buf.as_ptr().cast::<IP_ADAPTER_ADDRESSES_LH>()
    };
    while !next.is_null() {
        // SAFETY: `next` is the buffer's first adapter or a `Next` link the call wrote, all
        // inside `buf`, which outlives this loop.
        let adapter = unsafe { &*next };
        let mut addresses = Vec::new();
        let mut unicast = adapter.FirstUnicastAddress;
        while !unicast.is_null() {
            // SAFETY: as above: a link of the list inside `buf`.
            let entry = unsafe { &*unicast };
            // SAFETY: the sockaddr the call wrote, with its length.
            if let Some(address) = unsafe { socket_address(&entry.Address) } {
                addresses.push(IpAddress {
                    address,
                    prefix_len: entry.OnLinkPrefixLength,
                });
            }
            unicast = entry.Next;
        }
        addresses.sort();
        let mac_len = (adapter.PhysicalAddressLength as usize).min(adapter.PhysicalAddress.len());
        // SAFETY: FriendlyName is a NUL-terminated string inside `buf`.
        let name = unsafe { from_wide_ptr(adapter.FriendlyName) }.unwrap_or_default();
        interfaces.push(NetworkInterface {
            name,
            mac: format_mac(&adapter.PhysicalAddress[..mac_len]),
            mtu: (adapter.Mtu != u32::MAX).then_some(adapter.Mtu),
            oper_state: oper_state(adapter.OperStatus).to_owned(),
            // Bits per second; u64::MAX (and 0) mean "unknown".
            speed_mbps: (adapter.TransmitLinkSpeed != u64::MAX && adapter.TransmitLinkSpeed > 0)
                .then_some(adapter.TransmitLinkSpeed / 1_000_000),
            addresses,
        });
        next = adapter.Next;
    }
    Ok(interfaces)
}

pub fn collect(_: &Context) -> Collected {
    Ok(Some(FunctionReport::new(FunctionData::Network(
        interfaces()?,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_sockaddrs_and_macs() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&AF_INET.to_le_bytes());
        v4[4..8].copy_from_slice(&[192, 168, 1, 20]);
        assert_eq!(parse_sockaddr(&v4), Some("192.168.1.20".parse().unwrap()));
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&AF_INET6.to_le_bytes());
        v6[8..24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse_sockaddr(&v6), Some("fe80::1".parse().unwrap()));
        assert_eq!(parse_sockaddr(&v6[..20]), None);
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0x12, 0xab, 0xcd]).as_deref(),
            Some("52:54:00:12:ab:cd")
        );
        assert_eq!(format_mac(&[0; 6]), None);
        assert_eq!(oper_state(1), "up");
    }

    proptest! {
        #[test]
        fn never_panics_on_any_sockaddr(buf in proptest::collection::vec(any::<u8>(), 0..40)) {
            parse_sockaddr(&buf);
        }
    }
}
