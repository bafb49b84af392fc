//! Pause, resume, save and restore of real QEMU guests (TCG): a busybox guest counts on
//! its console; paused it stops counting, and a VM restored from its saved state goes on
//! counting where the save left it, with the memory of the shell that counts.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use banger_vmm::{ChannelKind, Launched, Qemu, VmConfig, Vmm, VmmError};
use support::Reap;

async fn launch(vmm: &Arc<Qemu>, cfg: &VmConfig) -> Result<Launched, VmmError> {
    let (vmm, cfg) = (Arc::clone(vmm), cfg.clone());
    tokio::task::spawn_blocking(move || vmm.launch(&cfg))
        .await
        .expect("launch task")
}

/// The highest `tick N` on a run directory's console.
fn last_tick(run: &std::path::Path) -> Option<u64> {
    support::console(run)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .max()
}

/// A secret only the counting shell's memory holds (never written anywhere).
const SCRIPT: &str = "secret=$(cat /proc/sys/kernel/random/uuid)\n\
                      i=0\n\
                      sum=$(echo $secret | md5sum)\n\
                      while :; do echo \"tick $i\"; echo \"secret-sum $sum\"; i=$((i+1)); sleep 0.1; done\n";

/// A launched guest running [`SCRIPT`] on the serial channel (its processes reaped on drop).
async fn counting_guest() -> (tempfile::TempDir, Arc<Qemu>, VmConfig, Reap) {
    counting_guest_with(false).await
}

/// [`counting_guest`], its memory a shared memfd or QEMU's own.
async fn counting_guest_with(
    shared_memory: bool,
) -> (tempfile::TempDir, Arc<Qemu>, VmConfig, Reap) {
    let run = support::run_dir();
    let initrd = run.path().join("initrd");
    support::initramfs(&initrd, &[], SCRIPT, &[]);
    let vmm = Arc::new(support::qemu());
    let cfg = VmConfig {
        shared_memory,
        ..support::config(run.path(), ChannelKind::Serial, Some(initrd), "quiet")
    };
    let launched = launch(&vmm, &cfg).await.expect("launch");
    (run, vmm, cfg, Reap(launched.processes))
}

/// The digest of the counting shell's secret on a run directory's console.
fn secret_sum(run: &std::path::Path) -> Option<String> {
    support::console(run)
        .lines()
        .find_map(|l| l.strip_prefix("secret-sum ").map(str::to_string))
}

fn allocated_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_guest_goes_on_where_it_was_paused() {
    let (run, vmm, cfg, _reap) = counting_guest().await;
    support::until(run.path(), "ticks", || last_tick(run.path()) >= Some(3)).await;

    // Paused: the count stops (well past the guest's 100 ms period, it has not moved).
    vmm.pause(run.path()).unwrap();
    vmm.pause(run.path()).expect("pausing twice is fine");
    let at_pause = last_tick(run.path());
    let state = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    vmm.save_state(run.path(), state.path()).expect("save");
    let save_time = started.elapsed();
    assert!(state.path().join(banger_vmm::qemu::STATE_FILE).is_file());
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        1,
        "only the state file"
    );
    assert_eq!(last_tick(run.path()), at_pause, "no tick while paused");
    eprintln!("saved 256 MiB guest in {save_time:?}");

    // Resumed: the count goes on.
    vmm.resume(run.path()).unwrap();
    let paused_at = at_pause.unwrap();
    support::until(run.path(), "ticks after resume", || {
        last_tick(run.path()) > Some(paused_at + 2)
    })
    .await;

    // Restored elsewhere: the new VM counts on from the saved moment, not from zero.
    let run2 = support::run_dir();
    let cfg2 = VmConfig {
        run_dir: run2.path().to_path_buf(),
        restore: Some(state.path().to_path_buf()),
        ..cfg.clone()
    };
    let restored = launch(&vmm, &cfg2).await.expect("restore");
    let _reap2 = Reap(restored.processes.clone());
    support::until(run2.path(), "ticks in the restored VM", || {
        last_tick(run2.path()) > Some(paused_at + 1)
    })
    .await;
    let console2 = support::console(run2.path());
    assert!(
        !console2.contains("tick 0\n"),
        "the restored VM did not boot again: {console2}"
    );
    // Both print the same digest of the secret in the shell's memory.
    support::until(run.path(), "the source's digest", || {
        secret_sum(run.path()).is_some()
    })
    .await;
    support::until(run2.path(), "the restored digest", || {
        secret_sum(run2.path()).is_some()
    })
    .await;
    assert_eq!(secret_sum(run.path()), secret_sum(run2.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_in_shared_memory_is_saved_without_streaming_it_and_restored_twice_from_it() {
    let (run, vmm, cfg, reap) = counting_guest_with(true).await;
    support::until(run.path(), "ticks", || last_tick(run.path()) >= Some(3)).await;
    vmm.pause(run.path()).unwrap();
    let paused_at = last_tick(run.path()).unwrap();
    let state = tempfile::tempdir().unwrap();
    vmm.save_state(run.path(), state.path()).expect("save");
    drop(reap); // the source is gone: its memfd is not what the restores use

    let memory = state.path().join(banger_vmm::qemu::MEMORY_FILE);
    let stream = std::fs::metadata(state.path().join(banger_vmm::qemu::STATE_FILE))
        .unwrap()
        .len();
    // The guest's memory (its initramfs alone is megabytes) is in the file, not the stream.
    assert!(
        allocated_bytes(&memory) > 4 << 20,
        "memory file holds the guest's pages"
    );
    assert!(
        stream < 2 << 20,
        "the stream carries devices only: {stream} bytes"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&memory).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "guest memory is its owner's only");
    let before = std::fs::read(&memory).unwrap();

    let mut restored = Vec::new();
    for _ in 0..2 {
        let run2 = support::run_dir();
        let cfg2 = VmConfig {
            run_dir: run2.path().to_path_buf(),
            restore: Some(state.path().to_path_buf()),
            ..cfg.clone()
        };
        let launched = launch(&vmm, &cfg2).await.expect("restore");
        restored.push((run2, Reap(launched.processes)));
    }
    for (run2, _) in &restored {
        support::until(run2.path(), "ticks in a restored VM", || {
            last_tick(run2.path()) > Some(paused_at + 2)
        })
        .await;
        let console = support::console(run2.path());
        assert!(!console.contains("tick 0\n"), "booted again: {console}");
        support::until(run2.path(), "the digest", || {
            secret_sum(run2.path()).is_some()
        })
        .await;
    }
    assert_eq!(
        secret_sum(restored[0].0.path()),
        secret_sum(restored[1].0.path())
    );
    // Copy-on-write: the guests wrote (they count), the saved memory did not change.
    assert!(
        std::fs::read(&memory).unwrap() == before,
        "the saved memory was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_guest_is_not_saved() {
    let (run, vmm, _cfg, _reap) = counting_guest().await;
    let state = tempfile::tempdir().unwrap();
    let e = vmm.save_state(run.path(), state.path()).unwrap_err();
    assert!(e.to_string().contains("not paused"), "{e}");
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}
