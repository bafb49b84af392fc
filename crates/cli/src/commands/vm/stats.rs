//! `banger vm stats NAME`: the guest's CPU, load, memory, network and uptime (its own
//! `/proc`) and the host's view (the VMM's CPU and memory, the disks' blocks, the tap's
//! bytes).

use banger_api::methods;
use banger_api::text::visible;
use banger_api::vm::{DiskUsage, VmRef, VmStats};
use clap::Args;

use crate::Context;
use crate::output::{self, human_bytes};
use banger_client::Client;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// VM name or id.
    pub vm: String,
}

pub async fn run(ctx: &Context, client: &Client, args: StatsArgs) -> anyhow::Result<u8> {
    let stats = client
        .call::<methods::vm::Stats>(&VmRef {
            vm: args.vm.clone(),
        })
        .await?;
    if ctx.json {
        output::print_json(&stats)?;
    } else {
        print!("{}", render(&stats));
    }
    Ok(0)
}

fn disk(d: &DiskUsage) -> String {
    format!(
        "{} on the host ({} apparent)",
        human_bytes(d.allocated_bytes),
        human_bytes(d.apparent_bytes)
    )
}

/// `label  value` lines: the guest's section (when it runs), then the host's.
pub fn render(s: &VmStats) -> String {
    let mut rows: Vec<(&str, String)> =
        vec![("VM", format!("{} ({})", visible(&s.vm), s.state.as_str()))];
    match &s.guest {
        Some(g) => {
            rows.push(("Uptime", format!("{:.0} s (guest)", g.uptime_secs)));
            rows.push((
                "CPU",
                format!(
                    "user {:.1} s, system {:.1} s, idle {:.1} s (guest, all CPUs)",
                    g.cpu_user_secs, g.cpu_system_secs, g.cpu_idle_secs
                ),
            ));
            rows.push((
                "Load",
                format!("{:.2} {:.2} {:.2}", g.load[0], g.load[1], g.load[2]),
            ));
            rows.push((
                "Memory",
                format!(
                    "{} used, {} available of {} (guest)",
                    human_bytes(g.memory_used_bytes),
                    human_bytes(g.memory_available_bytes),
                    human_bytes(g.memory_total_bytes)
                ),
            ));
            rows.push((
                "Network",
                format!(
                    "{} in, {} out (guest)",
                    human_bytes(g.net_rx_bytes),
                    human_bytes(g.net_tx_bytes)
                ),
            ));
        }
        None => rows.push(("Guest", "not running: no guest numbers".into())),
    }
    let h = &s.host;
    if let Some(cpu) = h.vmm_cpu_secs {
        rows.push(("VMM CPU", format!("{cpu:.1} s (host)")));
    }
    if let (Some(rss), Some(pss)) = (h.vmm_rss_bytes, h.vmm_pss_bytes) {
        rows.push((
            "VMM memory",
            format!("RSS {}, PSS {} (host)", human_bytes(rss), human_bytes(pss)),
        ));
    }
    if let (Some(rx), Some(tx)) = (h.net_rx_bytes, h.net_tx_bytes) {
        rows.push((
            "Tap",
            format!("{} in, {} out (host)", human_bytes(rx), human_bytes(tx)),
        ));
    }
    rows.push(("Root disk", disk(&h.root_disk)));
    rows.push(("Work disk", disk(&h.work_disk)));
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(l, v)| format!("{l:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use banger_api::vm::{GuestStats, HostStats, VmState};

    use super::*;

    #[test]
    fn a_running_vm_shows_both_sides_and_a_stopped_one_the_host_only() {
        let mut s = VmStats {
            vm: "dev\x1b[2J".into(),
            state: VmState::Running,
            guest: Some(GuestStats {
                memory_total_bytes: 1 << 30,
                memory_available_bytes: 768 << 20,
                memory_used_bytes: 256 << 20,
                ..GuestStats::default()
            }),
            host: HostStats {
                vmm_rss_bytes: Some(100 << 20),
                vmm_pss_bytes: Some(60 << 20),
                ..HostStats::default()
            },
        };
        let text = render(&s);
        assert!(
            text.contains("256.0 MiB used, 768.0 MiB available of 1.0 GiB"),
            "{text}"
        );
        assert!(text.contains("RSS 100.0 MiB, PSS 60.0 MiB"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "a guest-chosen name is escaped: {text}"
        );
        s.guest = None;
        s.state = VmState::Stopped;
        assert!(render(&s).contains("not running"));
    }
}
