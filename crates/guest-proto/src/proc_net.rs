//! The guest's `/proc/net/{tcp,udp}[6]` tables as the host reads them for `vm ports`.
//!
//! The text comes from the guest, so it may be anything: this parser never panics and
//! never allocates more than the input's size (fuzzed: `crates/oci/fuzz`, target
//! `proc_net`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A socket in the wanted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The local address.
    pub address: IpAddr,
    /// The local port.
    pub port: u16,
}

/// Sockets in state `state` (`0A` listening TCP, `07` bound UDP) from one table; lines
/// that do not parse are skipped.
pub fn sockets_in_state(table: &str, state: &str) -> Vec<Listening> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            if fields.nth(1)? != state {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            Some(Listening {
                address: hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

/// The kernel prints addresses as native-endian 32-bit words in hex.
fn hex_addr(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let word = |i: usize| -> Option<[u8; 4]> {
        let text = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(text, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0016 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        let socks = sockets_in_state(tcp, "0A");
        assert_eq!(socks.len(), 1);
        assert_eq!(socks[0].port, 8000);
        assert_eq!(socks[0].address.to_string(), "0.0.0.0");
        let tcp6 = "header\n   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 0\n";
        let socks = sockets_in_state(tcp6, "0A");
        assert_eq!(socks[0].address.to_string(), "::1");
        assert_eq!(socks[0].port, 22);
    }

    #[test]
    fn hostile_tables_are_skipped_not_panicked_on() {
        for table in [
            "h\n0: aaaaaaaé:0016 x 0A\n",
            "h\n0: ééééééééééééééééé:0016 x 0A\n",
            "h\n0: 0100007F:FFFFF x 0A\n",
            "h\n0: +100007F:0016 x 0A\n",
            "h\n0: 0100007F0:0016 x 0A\n",
            "h\n0:\n\n 0: : : :\n",
            "",
        ] {
            assert_eq!(sockets_in_state(table, "0A"), Vec::new(), "{table:?}");
        }
    }
}
