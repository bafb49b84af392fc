//! Where the daemon is: this machine's socket, or another host's daemon reached through
//! `ssh HOST banger daemon dial-stdio` (`--host ssh://[user@]host[:port]`).

use std::fmt;
use std::path::PathBuf;

/// The daemon a [`crate::Client`] talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// This machine's daemon, at its Unix socket.
    Local { socket: PathBuf },
    /// Another host's daemon, through real OpenSSH (the user's config, keys and agent).
    Ssh(SshTarget),
}

/// `ssh://[user@]host[:port]`, checked so that nothing in it can become an ssh option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error(
        "--host {0:?}: only ssh://[user@]host[:port] is supported (e.g. ssh://me@build-box); \
         without --host banger talks to this machine's daemon"
    )]
    Scheme(String),
    #[error("--host {0:?}: {1}")]
    Invalid(String, &'static str),
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]` (an IPv6 host in brackets: `ssh://[::1]:2222`).
    pub fn parse(text: &str) -> Result<SshTarget, HostError> {
        let bad = |why| HostError::Invalid(text.to_string(), why);
        let rest = text
            .strip_prefix("ssh://")
            .ok_or_else(|| HostError::Scheme(text.to_string()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("a path is not allowed after the host"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad("the port must be a number from 1 to 65535")),
            })
            .transpose()?;
        // Neither part may start with '-' (ssh would read an option) nor hold blanks,
        // quotes or control characters (the remote side runs through a shell).
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
        };
        if !plain(host) {
            return Err(bad(
                "the host name must be letters, digits, '.', '-' or '_'",
            ));
        }
        if let Some(u) = user
            && (!plain(u) || u.contains(':'))
        {
            return Err(bad(
                "the user name must be letters, digits, '.', '-' or '_'",
            ));
        }
        Ok(SshTarget {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
        })
    }

    /// The arguments that select this host on ssh's command line, after the options.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(port) = self.port {
            args.extend(["-p".to_string(), port.to_string()]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".to_string(), user.clone()]);
        }
        args.extend(["--".to_string(), self.host.clone()]);
        args
    }

    /// `ssh -L` that brings `remote_port` on the remote host's loopback to this machine.
    pub fn forward_hint(&self, local_port: u16, remote_ip: &str, remote_port: u16) -> String {
        let mut line = format!("ssh -N -L {local_port}:{remote_ip}:{remote_port}");
        if let Some(port) = self.port {
            line.push_str(&format!(" -p {port}"));
        }
        match &self.user {
            Some(user) => line.push_str(&format!(" {user}@{}", self.host)),
            None => line.push_str(&format!(" {}", self.host)),
        }
        line
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_parse_into_their_parts() {
        let t = SshTarget::parse("ssh://me@box.lan:2222").expect("parses");
        assert_eq!(t.user.as_deref(), Some("me"));
        assert_eq!(t.host, "box.lan");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.ssh_args(), ["-p", "2222", "-l", "me", "--", "box.lan"]);
        assert_eq!(t.to_string(), "ssh://me@box.lan:2222");
        let t = SshTarget::parse("ssh://box/").expect("parses");
        assert_eq!((t.user, t.port, t.host.as_str()), (None, None, "box"));
        let t = SshTarget::parse("ssh://[::1]:22").expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("::1", Some(22)));
        assert_eq!(t.to_string(), "ssh://[::1]:22");
    }

    #[test]
    fn nothing_in_a_host_can_become_an_ssh_option_or_a_shell_word() {
        for bad in [
            "ssh://-oProxyCommand=touch%20x",
            "ssh://-oProxyCommand=x@host",
            "ssh://host;reboot",
            "ssh://ho st",
            "ssh://host:0",
            "ssh://host:99999",
            "ssh://host/path",
            "ssh://",
            "ssh://user@",
            "ssh://a:b@host",
            "ssh://host\n",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            SshTarget::parse("tcp://host:1"),
            Err(HostError::Scheme(_))
        ));
    }

    #[test]
    fn the_forward_hint_names_the_host_as_given() {
        let t = SshTarget::parse("ssh://me@box:2222").expect("parses");
        assert_eq!(
            t.forward_hint(8080, "127.0.0.1", 18080),
            "ssh -N -L 8080:127.0.0.1:18080 -p 2222 me@box"
        );
    }
}
