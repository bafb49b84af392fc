//! `banger vm show NAME`

use banger_api::methods;
use banger_api::text::{human_duration, visible};
use banger_api::vm::{DiskUsage, Vm, VmRef, VmState};
use clap::Args;

use crate::Context;
use crate::output::{self, Style, Tone};
use banger_client::Client;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: ShowArgs) -> anyhow::Result<u8> {
    let vm: Vm = client
        .call::<methods::vm::Show>(&VmRef { vm: args.vm })
        .await?;
    if ctx.json {
        output::print_json(&vm)?;
    } else {
        print!("{}", render(&ctx.style, &vm));
    }
    Ok(0)
}

/// The mode, where it came from, the lists and what was denied (text the daemon built
/// from the user's own flags; denied addresses are plain IPs).
fn network(vm: &Vm) -> String {
    let Some(p) = &vm.net_policy else {
        return vm.net.clone();
    };
    let mut s = format!("{} (from {})", vm.net, visible(&p.from));
    if !p.allow.is_empty() {
        s.push_str(&format!(", allow {}", visible(&p.allow.join(" "))));
    }
    if !p.deny.is_empty() {
        s.push_str(&format!(", deny {}", visible(&p.deny.join(" "))));
    }
    match (p.denied_packets, &p.denials_error) {
        (Some(n), _) => s.push_str(&format!(
            ", {} destination(s) denied in the last hour ({n} packets){}",
            p.recent_denials.len(),
            if p.recent_denials.is_empty() {
                String::new()
            } else {
                // The full list is in --json.
                let shown: Vec<&str> = p
                    .recent_denials
                    .iter()
                    .take(10)
                    .map(String::as_str)
                    .collect();
                let more = p.recent_denials.len().saturating_sub(shown.len());
                let more = if more > 0 {
                    format!(" (+{more}, see --json)")
                } else {
                    String::new()
                };
                format!(": {}{more}", shown.join(" "))
            }
        )),
        (None, Some(e)) => s.push_str(&format!(", denials unreadable: {}", visible(e))),
        (None, None) => {}
    }
    s
}

/// Key/value lines; stages and a multi-line last error continue under their key.
pub fn render(style: &Style, vm: &Vm) -> String {
    let dash = || style.paint(Tone::Dim, "-");
    let state = {
        let tone = match vm.state {
            VmState::Running => Tone::Good,
            VmState::Error => Tone::Bad,
            VmState::Starting | VmState::Stopping | VmState::Paused => Tone::Warn,
            VmState::Created | VmState::Stopped => Tone::Dim,
        };
        style.paint(tone, vm.state.as_str())
    };
    let accel = if vm.accel_reason.is_empty() {
        vm.accel.clone()
    } else {
        format!("{} ({})", vm.accel, vm.accel_reason)
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", vm.name.clone()),
        ("ID", vm.id.clone()),
        ("State", state),
        ("Image", format!("{} ({})", vm.image, vm.image_id)),
        ("CPUs", vm.cpus.to_string()),
        (
            "Memory",
            output::human_bytes(vm.memory_mib.saturating_mul(1 << 20)),
        ),
        ("Init", vm.init.clone()),
        ("VMM", format!("{}, {accel}", vm.vmm)),
        ("Channel", vm.channel.clone()),
        ("Network", network(vm)),
        ("Root disk", disk(&vm.root_disk)),
        ("Work disk", disk(&vm.work_disk)),
        ("PID", vm.pid.map_or_else(dash, |p| p.to_string())),
        ("Directory", vm.dir.clone()),
        ("Created", vm.created_at.clone()),
        ("Started", vm.started_at.clone().unwrap_or_else(dash)),
    ];
    if vm.auto_remove {
        let when = if vm.leased {
            "when it stops or its `vm run` ends"
        } else {
            "when it stops"
        };
        fields.push(("Removed", format!("{when} (--rm)")));
    }
    match (vm.start.as_deref(), &vm.forked_from) {
        (Some("warm"), Some(snapshot)) => fields.push((
            "Start",
            format!("warm, from ready-snapshot {}", visible(snapshot)),
        )),
        (_, Some(snapshot)) => {
            fields.push(("Forked from", format!("snapshot {}", visible(snapshot))))
        }
        (Some(start), None) => fields.push(("Start", visible(start).to_string())),
        (None, None) => {}
    }
    if let Some(after) = vm.stop_idle_after_secs {
        let after = human_duration(after);
        let when = match (vm.state, vm.idle_stop_in_secs) {
            (VmState::Running, Some(left)) => {
                format!("in {} (after {after} idle)", human_duration(left))
            }
            (VmState::Running, None) => format!("after {after} idle (a session is open now)"),
            _ => format!("after {after} idle, once running"),
        };
        fields.push(("Idle stop", when));
    }
    if let Some(c) = &vm.capabilities {
        fields.push((
            "Capabilities",
            format!(
                "pause {}, snapshot {}, shared folders {}, hot-plug {}, vsock {}",
                c.pause, c.snapshot, c.shared_folders, c.hot_plug, c.vsock
            ),
        ));
    }
    fields.push(("Stages", stages(vm).unwrap_or_else(dash)));
    fields.push((
        "Last error",
        // Often quotes the guest's console or agent: shown, never obeyed.
        vm.last_error
            .as_deref()
            .map_or_else(dash, |e| visible(e.trim_end()).into_owned()),
    ));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let indent = " ".repeat(width + 2);
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(&style.paint(Tone::Bold, key));
        out.push_str(&" ".repeat(width - key.len() + 2));
        let mut lines = value.lines();
        out.push_str(lines.next().unwrap_or(""));
        out.push('\n');
        for line in lines {
            out.push_str(&indent);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn disk(d: &DiskUsage) -> String {
    format!(
        "{} apparent, {} allocated",
        output::human_bytes(d.apparent_bytes),
        output::human_bytes(d.allocated_bytes)
    )
}

/// One line per stage: name, host time since the start, guest uptime where known.
fn stages(vm: &Vm) -> Option<String> {
    if vm.stages.is_empty() {
        return None;
    }
    let width = vm.stages.iter().map(|s| s.stage.len()).max().unwrap_or(0);
    let lines: Vec<String> = vm
        .stages
        .iter()
        .map(|s| {
            let at = format!("+{:.2}s", s.at_ms as f64 / 1000.0);
            let line = match s.guest_uptime_ms {
                Some(g) => format!(
                    "{:width$}  {at:>8}  (guest uptime {:.2}s)",
                    s.stage,
                    g as f64 / 1000.0
                ),
                None => format!("{:width$}  {at:>8}", s.stage),
            };
            line.trim_end().to_string()
        })
        .collect();
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::vm::testing::sample_vm;

    #[test]
    fn details_of_a_running_vm() {
        let text = render(&Style::plain(), &sample_vm());
        let expected = "\
Name        dev
ID          vm-3f2a9c1d
State       running
Image       debian-bookworm (img-0a1b2c3d)
CPUs        2
Memory      1.0 GiB
Init        agent
VMM         qemu, tcg (/dev/kvm did not boot the probe guest)
Channel     vsock
Network     public
Root disk   8.0 GiB apparent, 3.0 MiB allocated
Work disk   8.0 GiB apparent, 1.0 MiB allocated
PID         4242
Directory   /home/me/.local/state/banger/vms/vm-3f2a9c1d
Created     2025-05-01T10:00:00Z
Started     2025-05-01T10:00:01Z
Idle stop   in 1h30m (after 2h idle)
Stages      vmm_spawned       +0.04s
            root_assembled    +2.90s  (guest uptime 1.80s)
            ready             +3.40s  (guest uptime 2.05s)
Last error  -
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_failed_vm_shows_its_error_under_the_key() {
        let mut vm = sample_vm();
        vm.state = VmState::Error;
        vm.pid = None;
        vm.stages.truncate(1);
        vm.last_error = Some(
            "the guest did not report ready within 120s (last stage: vmm_spawned)\nconsole tail:\n[    1.2] Kernel panic\n"
                .into(),
        );
        let text = render(&Style::plain(), &vm);
        assert!(text.contains("State       error\n"), "{text}");
        assert!(text.contains("PID         -\n"), "{text}");
        assert!(
            text.ends_with(
                "Last error  the guest did not report ready within 120s (last stage: vmm_spawned)\n            console tail:\n            [    1.2] Kernel panic\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_last_error_quoting_terminal_escapes_shows_them_escaped() {
        let mut vm = sample_vm();
        vm.last_error =
            Some("exec failed\nconsole tail:\n\u{1b}]52;c;Y3VybCBldmlsfHNo\u{7}\u{9b}31m\n".into());
        let text = render(&Style::plain(), &vm);
        assert!(
            !text.contains(['\u{1b}', '\u{7}', '\u{9b}']),
            "no raw control reaches the terminal: {text:?}"
        );
        assert!(
            text.ends_with("            \\x1b]52;c;Y3VybCBldmlsfHNo\\x07\\x9b31m\n"),
            "{text}"
        );
    }

    #[test]
    fn capabilities_are_one_line_when_known() {
        let mut vm = sample_vm();
        vm.capabilities = Some(banger_api::vm::VmCapabilities {
            pause: "vmm_only".into(),
            snapshot: "vmm_only".into(),
            shared_folders: "vmm_only".into(),
            hot_plug: "no".into(),
            vsock: "vhost_user".into(),
        });
        let text = render(&Style::plain(), &vm);
        assert!(
            text.contains(
                "Capabilities  pause vmm_only, snapshot vmm_only, shared folders vmm_only, hot-plug no, vsock vhost_user\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_is_the_vm_itself() {
        let text = output::json_string(&sample_vm()).expect("json");
        let back: Vm = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back.name, "dev");
        assert_eq!(back.state, VmState::Running);
        assert_eq!(back.stages, sample_vm().stages);
        assert_eq!(back.work_disk, sample_vm().work_disk);
    }
}
