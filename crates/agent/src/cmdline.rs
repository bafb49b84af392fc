//! The `banger.*` keys of the kernel command line (see `banger_guest_proto::cmdline`).
//!
//! Parsing never fails: an absent key takes its default, an unusable value is reported as
//! a warning and takes the default too, so a bad command line still boots far enough for
//! the host to hear about it. The last occurrence of a key wins, as in the kernel.

use banger_guest_proto::{InitMode, Readiness, cmdline as keys};

/// Which transport the agent opens to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// AF_VSOCK to the host's CID (the default).
    Vsock,
    /// The named virtio-serial port.
    Serial,
}

/// Whether the guest network is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Static user-mode addressing on `eth0`.
    User,
    /// Loopback only (the default).
    None,
}

/// What the host asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// `banger.channel`.
    pub channel: Channel,
    /// `banger.hostname`, when valid.
    pub hostname: Option<String>,
    /// `banger.init`.
    pub init: InitMode,
    /// `banger.net`.
    pub net: Net,
    /// `banger.clock`, seconds since the epoch.
    pub clock: Option<u64>,
    /// `banger.ready`.
    pub ready: Readiness,
    /// `banger.modules=1`: the modules disk is attached.
    pub modules: bool,
}

impl BootArgs {
    /// Reads the keys from `/proc/cmdline`'s text; returns the warnings to log.
    pub fn parse(cmdline: &str) -> (BootArgs, Vec<String>) {
        let mut args = BootArgs {
            channel: Channel::Vsock,
            hostname: None,
            init: InitMode::Auto,
            net: Net::None,
            clock: None,
            ready: Readiness::default(),
            modules: false,
        };
        let mut warnings = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let mut bad = || warnings.push(format!("ignoring {key}={value:?}: unknown value"));
            match key {
                keys::CHANNEL => match value {
                    "vsock" => args.channel = Channel::Vsock,
                    "serial" => args.channel = Channel::Serial,
                    _ => bad(),
                },
                keys::HOSTNAME => {
                    if valid_hostname(value) {
                        args.hostname = Some(value.to_string());
                    } else {
                        bad();
                    }
                }
                keys::INIT => match InitMode::parse(value) {
                    Some(m) => args.init = m,
                    None => bad(),
                },
                keys::NET => match value {
                    "user" => args.net = Net::User,
                    "none" => args.net = Net::None,
                    _ => bad(),
                },
                keys::CLOCK => match value.parse() {
                    Ok(s) => args.clock = Some(s),
                    Err(_) => bad(),
                },
                keys::READY => match Readiness::parse(value) {
                    Some(r) => args.ready = r,
                    None => bad(),
                },
                keys::MODULES => match value {
                    "1" => args.modules = true,
                    "0" => args.modules = false,
                    _ => bad(),
                },
                _ => {}
            }
        }
        (args, warnings)
    }
}

/// RFC 1123 labels, at most 64 bytes (the kernel's limit).
pub(crate) fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_and_the_last_one_wins() {
        let (a, w) = BootArgs::parse(
            "console=ttyS0 banger.channel=serial banger.hostname=dev banger.init=agent \
             banger.net=user banger.clock=1700000000 banger.hostname=box banger.modules=1 quiet\n",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            a,
            BootArgs {
                channel: Channel::Serial,
                hostname: Some("box".into()),
                init: InitMode::Agent,
                net: Net::User,
                clock: Some(1_700_000_000),
                ready: Readiness::Sysinit,
                modules: true,
            }
        );
    }

    #[test]
    fn defaults_and_bad_values() {
        let (a, w) = BootArgs::parse("banger.channel=pigeon banger.hostname=-x banger.clock=soon");
        assert_eq!(a.channel, Channel::Vsock);
        assert_eq!(a.hostname, None);
        assert_eq!(a.init, InitMode::Auto);
        assert_eq!(a.net, Net::None);
        assert_eq!(a.clock, None);
        assert_eq!(w.len(), 3, "{w:?}");
    }
}
