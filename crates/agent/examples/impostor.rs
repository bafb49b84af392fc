//! A guest process that tries to take over the agent channel, for the hostile-guest tests
//! (`crates/banger/tests/hostile_guest.rs`); never shipped.
//!
//! Run in a guest as an unprivileged user, it tries the attacks on the channel that
//! SECURITY.md defends against, one per mode:
//! - `serve`: dials the host's agent port in a loop (every 5 ms, twenty times as often as
//!   the real agent redials) and serves the real protocol (this crate's own server) with a
//!   secret of its own guessing. A host that accepted it would run later `vm exec`s here,
//!   as this user. Each attempt is counted in `/tmp/impostor.count`.
//! - `stall`: holds `STALLERS` connections to the port open without a word, dialling
//!   again whenever the host drops one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use banger_agent::{Agent, AgentConfig, Machine, dial_host_vsock};
use banger_guest_proto::InitMode;

const STALLERS: usize = 32;

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("impostor: runtime: {e}");
            std::process::exit(1);
        }
    };
    match std::env::args().nth(1).as_deref() {
        Some("serve") => rt.block_on(serve()),
        Some("stall") => rt.block_on(async {
            let stallers: Vec<_> = (0..STALLERS).map(|_| tokio::spawn(stall())).collect();
            for s in stallers {
                let _ = s.await;
            }
        }),
        _ => {
            eprintln!("usage: impostor serve|stall");
            std::process::exit(2);
        }
    }
}

async fn serve() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut cfg = AgentConfig::new("/", InitMode::Agent, Machine::Recorder(tx));
    cfg.secret = b"a guess: the real secret is not readable by this user".to_vec();
    let agent = match Agent::new(cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("impostor: {e}");
            std::process::exit(1);
        }
    };
    let attempts = Arc::new(AtomicU64::new(0));
    loop {
        if let Ok(stream) = dial_host_vsock().await {
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            // Whole or not at all: the test reads it while this goes on.
            let _ = std::fs::write("/tmp/impostor.count.new", n.to_string())
                .and_then(|()| std::fs::rename("/tmp/impostor.count.new", "/tmp/impostor.count"));
            // Bounded: a connection the host never speaks on (a daemon killed after the
            // kernel queued it) must not end the attack.
            let _ = tokio::time::timeout(Duration::from_secs(2), agent.serve(stream)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Holds one silent connection at a time, redialling when the host drops it.
async fn stall() {
    loop {
        if let Ok(mut stream) = dial_host_vsock().await {
            let mut buf = [0u8; 4096];
            // Read (and ignore) until the host closes: never answer.
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
