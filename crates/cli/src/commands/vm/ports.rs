//! `banger vm ports NAME`: the ports published on the host and the sockets listening in
//! the guest.

use banger_api::methods;
use banger_api::vm::{VmPorts, VmRef};
use clap::Args;

use crate::Context;
use crate::output::{self, Style};
use banger_client::Client;

#[derive(Debug, Args)]
pub struct PortsArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: PortsArgs) -> anyhow::Result<u8> {
    let ports: VmPorts = client
        .call::<methods::vm::Ports>(&VmRef {
            vm: args.vm.clone(),
        })
        .await?;
    if ctx.json {
        output::print_json(&ports)?;
    } else {
        print!("{}", render(&ctx.style, &args.vm, &ports));
        if let Some(target) = client.remote() {
            print!("{}", remote_hint(target, &ports));
        }
    }
    Ok(0)
}

/// Two tables: what is published (host → guest), and what listens in the guest, each
/// listening socket marked with the host address that reaches it, if any.
pub fn render(style: &Style, vm: &str, ports: &VmPorts) -> String {
    let mut out = String::new();
    if ports.published.is_empty() {
        out.push_str(&format!(
            "no published ports (publish with `banger vm create {vm} … -p HOST:GUEST`)\n"
        ));
    } else {
        let rows: Vec<Vec<String>> = ports
            .published
            .iter()
            .map(|p| {
                vec![
                    p.proto.clone(),
                    format!("{}:{}", p.host_ip, p.host_port),
                    p.guest_port.to_string(),
                ]
            })
            .collect();
        out.push_str(&output::table(
            style,
            &["PROTO", "HOST", "GUEST PORT"],
            &rows,
        ));
    }
    out.push('\n');
    if ports.listening.is_empty() {
        out.push_str("nothing listening in the guest (or it is not running)\n");
    } else {
        let rows: Vec<Vec<String>> = ports
            .listening
            .iter()
            .map(|l| {
                let published = ports
                    .published
                    .iter()
                    .find(|p| p.proto == l.proto && p.guest_port == l.port)
                    .map(|p| format!("{}:{}", p.host_ip, p.host_port))
                    .unwrap_or_else(|| "-".into());
                vec![
                    l.proto.clone(),
                    format!("{}:{}", l.address, l.port),
                    published,
                ]
            })
            .collect();
        out.push_str(&output::table(
            style,
            &["PROTO", "LISTENING IN GUEST", "PUBLISHED AS"],
            &rows,
        ));
    }
    out
}

/// With `--host`, ports are published on that host: how to bring each TCP one here.
pub fn remote_hint(target: &banger_client::SshTarget, ports: &VmPorts) -> String {
    let tcp: Vec<_> = ports
        .published
        .iter()
        .filter(|p| p.proto == "tcp")
        .collect();
    if tcp.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nThese ports are published on {target}, not on this machine. To bring one here:\n"
    );
    for p in tcp {
        // A wildcard address on the remote host is reached through its loopback.
        let ip = match p.host_ip.as_str() {
            "0.0.0.0" | "::" => "127.0.0.1",
            ip => ip,
        };
        out.push_str(&format!(
            "  {}\n",
            target.forward_hint(p.host_port, ip, p.host_port)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use banger_api::vm::{ListeningSocket, PublishedPort};

    #[test]
    fn a_remote_hint_names_an_ssh_forward_per_tcp_port() {
        let target = banger_client::SshTarget::parse("ssh://me@box").expect("parses");
        let ports = VmPorts {
            published: vec![PublishedPort {
                proto: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                guest_port: 80,
            }],
            listening: vec![],
        };
        let text = remote_hint(&target, &ports);
        assert!(text.contains("ssh://me@box"), "{text}");
        assert!(
            text.contains("ssh -N -L 8080:127.0.0.1:8080 me@box"),
            "{text}"
        );
        let none = VmPorts {
            published: vec![],
            listening: vec![],
        };
        assert_eq!(remote_hint(&target, &none), "");
    }

    use super::*;

    #[test]
    fn both_tables_render() {
        let ports = VmPorts {
            published: vec![PublishedPort {
                proto: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                guest_port: 80,
            }],
            listening: vec![
                ListeningSocket {
                    proto: "tcp".into(),
                    address: "0.0.0.0".into(),
                    port: 80,
                },
                ListeningSocket {
                    proto: "tcp".into(),
                    address: "127.0.0.1".into(),
                    port: 5432,
                },
            ],
        };
        let text = render(&Style::plain(), "dev", &ports);
        assert_eq!(
            text,
            "PROTO  HOST            GUEST PORT\ntcp    127.0.0.1:8080  80\n\n\
PROTO  LISTENING IN GUEST  PUBLISHED AS\ntcp    0.0.0.0:80          127.0.0.1:8080\ntcp    127.0.0.1:5432      -\n"
        );
        let empty = render(
            &Style::plain(),
            "dev",
            &VmPorts {
                published: vec![],
                listening: vec![],
            },
        );
        assert!(empty.contains("no published ports"));
        assert!(empty.contains("nothing listening"));
    }
}
