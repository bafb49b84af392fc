//! `banger vm ssh NAME [-- CMD…]`: an interactive login shell (or CMD) on a pty in the
//! guest, over the agent: no sshd or network route needed. It is `vm exec -it` with the
//! pty forced, your `TERM`, and the window size following yours.

use clap::Args;

use crate::commands::vm::exec::{self, ExecArgs};
use crate::commands::vm::run::LOGIN_SHELL;
use banger_client::Client;

#[derive(Debug, Args)]
pub struct SshArgs {
    /// VM name or id (a trailing `.vm` is allowed, as in `ssh NAME.vm`).
    pub vm: String,
    /// Run as this user: a name from the guest's /etc/passwd, or uid[:gid] [default: root].
    // Doc comment = clap help text, shown verbatim: not rustdoc markup.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, short, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory in the guest [default: the user's home].
    #[arg(long, short, value_name = "DIR")]
    pub workdir: Option<String>,
    /// A command to run on the pty instead of the login shell (after `--`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn exec_args(args: SshArgs) -> ExecArgs {
    let vm = args.vm.strip_suffix(".vm").unwrap_or(&args.vm).to_string();
    ExecArgs {
        vm,
        interactive: true,
        tty: true,
        env: Vec::new(),
        workdir: args.workdir,
        user: args.user,
        command: if args.command.is_empty() {
            LOGIN_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            args.command
        },
    }
}

pub async fn run(client: &Client, args: SshArgs) -> anyhow::Result<u8> {
    exec::run(client, exec_args(args)).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::commands::vm::VmCommand;

    fn parse(args: &[&str]) -> SshArgs {
        let argv = ["banger", "vm", "ssh"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Vm(VmCommand::Ssh(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_shell_or_a_command_always_on_a_pty() {
        let e = exec_args(parse(&["dev"]));
        assert_eq!(e.vm, "dev");
        assert_eq!(e.command, LOGIN_SHELL);
        assert!(e.tty && e.interactive);
        let e = exec_args(parse(&["dev.vm", "-u", "me", "--", "tty"]));
        assert_eq!(e.vm, "dev");
        assert_eq!(e.command, ["tty"]);
        assert_eq!(e.user.as_deref(), Some("me"));
        assert!(e.tty);
    }
}
