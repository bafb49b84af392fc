//! `vm.stats`: the guest's own numbers (its `/proc`, read through the agent's bounded
//! `read-file`, parsed as untrusted text: a field that does not parse is a zero) next to
//! what the host measures (the VMM's `/proc`, its tap's counters, the disks' blocks).

use std::path::Path;
use std::sync::Arc;

use banger_api::vm::{GuestStats, HostStats, VmRef, VmState, VmStats};
use banger_guest_proto::ReadFile;

use super::{Vms, disks, parse_runtime, parse_spec, state_of};
use crate::error::OpError;

/// Largest `/proc` file read from the guest (a guest with many interfaces or CPUs has
/// longer ones; these are kilobytes).
const MAX_PROC_FILE: u64 = 256 << 10;
/// Linux's `USER_HZ` on every architecture banger runs: `/proc/stat`'s tick.
const USER_HZ: f64 = 100.0;

impl Vms {
    pub async fn stats(self: &Arc<Self>, p: VmRef) -> Result<VmStats, OpError> {
        let row = self.find(&p.vm)?;
        let spec = parse_spec(&row)?;
        let runtime = parse_runtime(&row);
        let state = state_of(&row);
        let guest = if state == VmState::Running {
            Some(self.guest_stats(&row.id).await?)
        } else {
            None
        };
        let (root, work) = disks::paths(Path::new(&row.dir), spec.disk_format);
        let mut host = HostStats {
            root_disk: disks::usage(&root),
            work_disk: disks::usage(&work),
            ..HostStats::default()
        };
        if let Some(vmm) = runtime.vmm_process().filter(|p| p.is_alive()) {
            let proc_dir = Path::new("/proc").join(vmm.pid.to_string());
            host.vmm_cpu_secs = std::fs::read_to_string(proc_dir.join("stat"))
                .ok()
                .and_then(|s| process_cpu_secs(&s));
            if let Ok(rollup) = std::fs::read_to_string(proc_dir.join("smaps_rollup")) {
                host.vmm_rss_bytes = kib_field(&rollup, "Rss:");
                host.vmm_pss_bytes = kib_field(&rollup, "Pss:");
            }
            // The VMM lives in the VM's network namespace: its tap is the guest's wire.
            if let Some((rx, tx)) = std::fs::read_to_string(proc_dir.join("net/dev"))
                .ok()
                .and_then(|t| interface_bytes(&t, banger_vmm::netns::TAP_NAME))
            {
                // The tap receives what the guest sends.
                (host.net_rx_bytes, host.net_tx_bytes) = (Some(tx), Some(rx));
            }
        }
        Ok(VmStats {
            vm: row.name,
            state,
            guest,
            host,
        })
    }

    async fn guest_stats(self: &Arc<Self>, vm: &str) -> Result<GuestStats, OpError> {
        let (_, conn) = self.agent_of(vm).await?;
        let mut files = Vec::new();
        for path in [
            "/proc/uptime",
            "/proc/stat",
            "/proc/loadavg",
            "/proc/meminfo",
            "/proc/net/dev",
        ] {
            let read = ReadFile {
                path: path.into(),
                max_bytes: MAX_PROC_FILE,
            };
            let text = conn
                .read_file(&read)
                .await
                .map(|c| c.data)
                .map_err(|e| OpError::Failed(format!("reading the guest's {path}: {e}")))?;
            files.push(text);
        }
        Ok(parse_guest(
            &files[0], &files[1], &files[2], &files[3], &files[4],
        ))
    }
}

/// The guest's numbers from its `/proc` texts.
fn parse_guest(
    uptime: &str,
    stat: &str,
    loadavg: &str,
    meminfo: &str,
    net_dev: &str,
) -> GuestStats {
    let first = |t: &str| {
        t.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    };
    let mut load = [0.0; 3];
    for (slot, v) in load.iter_mut().zip(loadavg.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    // `cpu  user nice system idle iowait irq softirq …` in USER_HZ ticks.
    let ticks: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let secs = |fields: &[usize]| {
        let sum = fields
            .iter()
            .map(|&i| ticks.get(i).copied().unwrap_or(0))
            .fold(0u64, u64::saturating_add);
        sum as f64 / USER_HZ
    };
    let total = kib_field(meminfo, "MemTotal:").unwrap_or(0);
    let available = kib_field(meminfo, "MemAvailable:").unwrap_or(0);
    let (mut rx, mut tx) = (0u64, 0u64);
    for (name, (r, t)) in interfaces(net_dev) {
        if name != "lo" {
            rx = rx.saturating_add(r);
            tx = tx.saturating_add(t);
        }
    }
    GuestStats {
        uptime_secs: first(uptime).unwrap_or(0.0),
        cpu_user_secs: secs(&[0, 1]),
        cpu_system_secs: secs(&[2, 5, 6]),
        cpu_idle_secs: secs(&[3, 4]),
        load,
        memory_total_bytes: total,
        memory_available_bytes: available,
        memory_used_bytes: total.saturating_sub(available),
        net_rx_bytes: rx,
        net_tx_bytes: tx,
    }
}

/// `Name:   1234 kB` of a `/proc/meminfo` or `smaps_rollup` text, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}

/// `(interface, (received bytes, sent bytes))` of a `/proc/net/dev` table.
fn interfaces(table: &str) -> impl Iterator<Item = (&str, (u64, u64))> {
    table.lines().skip(2).filter_map(|l| {
        let (name, counters) = l.split_once(':')?;
        let f: Vec<&str> = counters.split_whitespace().collect();
        Some((
            name.trim(),
            (f.first()?.parse().ok()?, f.get(8)?.parse().ok()?),
        ))
    })
}

pub(super) fn interface_bytes(table: &str, name: &str) -> Option<(u64, u64)> {
    interfaces(table).find(|(n, _)| *n == name).map(|(_, b)| b)
}

/// User + system CPU seconds of a `/proc/PID/stat` line (fields 14 and 15, counted after
/// the command name, which may hold spaces and parentheses).
fn process_cpu_secs(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (utime + stime) as f64 / hz as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
        face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
        lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
        eth0: 5000000   3000    0    0    0     0          0         0    70000     900    0    0    0     0       0          0\n";

    #[test]
    fn the_guests_proc_texts_become_numbers() {
        let g = parse_guest(
            "123.45 200.00\n",
            "cpu  100 50 30 1000 20 5 5 0 0 0\ncpu0 100 50 30 1000 20 5 5 0 0 0\n",
            "0.50 0.25 0.10 1/80 300\n",
            "MemTotal:         500000 kB\nMemFree:          100000 kB\nMemAvailable:     400000 kB\n",
            NET_DEV,
        );
        assert_eq!(g.uptime_secs, 123.45);
        assert_eq!(
            (g.cpu_user_secs, g.cpu_system_secs, g.cpu_idle_secs),
            (1.5, 0.4, 10.2)
        );
        assert_eq!(g.load, [0.5, 0.25, 0.1]);
        assert_eq!(g.memory_total_bytes, 500_000 * 1024);
        assert_eq!(g.memory_used_bytes, 100_000 * 1024);
        assert_eq!((g.net_rx_bytes, g.net_tx_bytes), (5_000_000, 70_000));
        assert_eq!(interface_bytes(NET_DEV, "eth0"), Some((5_000_000, 70_000)));
    }

    #[test]
    fn garbage_from_a_guest_is_zeros_not_a_panic() {
        let g = parse_guest(
            "x",
            "cpu  a b\n",
            "nan-ish",
            "MemTotal: lots\n",
            "::::\n\n:\n",
        );
        assert_eq!(g.memory_total_bytes, 0);
        assert_eq!(g.cpu_user_secs, 0.0);
        assert_eq!(g.net_rx_bytes, 0);
        let huge = format!("MemTotal: {} kB\n", u64::MAX);
        assert_eq!(kib_field(&huge, "MemTotal:"), Some(u64::MAX));
    }

    #[test]
    fn a_process_stat_line_with_odd_names_is_read() {
        let line = "42 (qemu (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 0 0";
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(process_cpu_secs(line), Some(300.0 / hz));
        assert_eq!(process_cpu_secs("garbage"), None);
    }
}
