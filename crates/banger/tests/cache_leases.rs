//! `image cache prune` while a `kernel pull` is half-way: the pull's lease keeps the layer
//! it has fetched, the same prune removes a blob nobody holds, and the pull completes with
//! the right files. The daemon builds one OCI client for images, kernels and prune; a
//! second cache would not see the kernel pull's lease and this test would fail.
//!
//! The pull is held half-way by a loopback proxy in front of a real `docker-registry`: it
//! lets everything through except the download of one layer, which waits for the test.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use banger_testkit::fake_kernel as fixture;
use banger_testkit::layers::LayerBuilder;
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::registry::Registry;
use banger_testkit::wait;
use common::TestEnv;

/// Whether the gated request has arrived, and whether it may go on.
#[derive(Default)]
struct GateState {
    arrived: bool,
    open: bool,
}

#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.arrived = true;
        self.changed.notify_all();
        while !s.open {
            s = self.changed.wait(s).unwrap();
        }
    }

    fn arrived(&self) -> bool {
        self.state.lock().unwrap().arrived
    }

    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }
}

/// A TCP proxy on `127.0.0.1:<port>` to `upstream`, one request per connection (it asks
/// for `Connection: close`, so a gated request never hides behind a reused connection).
/// A request whose path contains `gated` waits at the gate. Its threads end with the test
/// process; it starts no process.
fn gated_proxy(upstream: u16, gated: String, gate: Arc<Gate>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (gated, gate) = (gated.clone(), gate.clone());
            std::thread::spawn(move || relay(client, upstream, &gated, &gate));
        }
    });
    port
}

fn relay(mut client: TcpStream, upstream: u16, gated: &str, gate: &Gate) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    if request_line.contains(gated) {
        gate.pass();
    }
    let mut rewritten: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    if server.write_all(rewritten.as_bytes()).is_err() {
        return;
    }
    // A request body (none in a pull) goes up; the response comes down until the
    // registry closes.
    let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
    });
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
}

fn blob_path(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn prune_during_a_kernel_pull_keeps_its_layer_and_the_pull_succeeds() {
    let mut registry = Registry::start();
    let env = TestEnv::new();

    // A kernel image of two layers: the kernel and initrd on top, modules below.
    let vmlinuz = fixture::gzip_bzimage("6.1.99-lease");
    let top = LayerBuilder::new()
        .file("vmlinuz", &vmlinuz)
        .file("initrd.img", b"initrd of the lease test")
        .finish();
    let bottom = LayerBuilder::new()
        .dir("modules", 0o755)
        .file("modules/modules.dep", b"")
        .file("modules/kernel/fs/ext4.ko", b"ext4 module")
        .finish();
    let layout = env.path("layout");
    let written = oci_image::single(
        &layout,
        "k",
        &[
            Layer {
                tar: bottom,
                compression: Compression::Gzip,
            },
            Layer {
                tar: top,
                compression: Compression::Gzip,
            },
        ],
    );
    registry.push(
        &format!("oci:{}:k", layout.display()),
        "kernels/lease:1",
        &[],
    );
    let (gated_layer, free_layer) = (&written.layer_digests[0], &written.layer_digests[1]);

    let gate = Arc::new(Gate::default());
    let proxy = gated_proxy(registry.port(), gated_layer.clone(), gate.clone());

    // A blob no pull holds: the prune must remove it.
    let cache = env.path("cache/banger/oci");
    let stale = b"a layer of an image converted long ago".to_vec();
    let stale_path = blob_path(&cache, &oci_image::sha256(&stale));
    std::fs::create_dir_all(stale_path.parent().unwrap()).unwrap();
    std::fs::write(&stale_path, &stale).unwrap();

    let reference = format!("127.0.0.1:{proxy}/kernels/lease:1");
    let pull = env
        .banger_cmd(&["--json", "kernel", "pull", &reference, "--name", "leased"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kernel pull");
    // Open the gate however the test ends, so the pull (and the daemon) can finish.
    struct OpenOnDrop(Arc<Gate>);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let _open = OpenOnDrop(gate.clone());

    // Half-way: one layer fetched into the cache, the other held at the proxy.
    let free_blob = blob_path(&cache, free_layer);
    wait::until_for(
        "the pull to fetch one layer and wait for the other",
        Duration::from_secs(60),
        || gate.arrived() && free_blob.is_file(),
    );

    let pruned = env.json(&["image", "cache", "prune"]);
    assert_eq!(pruned["blobs"], 1, "only the unleased blob goes: {pruned}");
    assert_eq!(pruned["bytes"], stale.len(), "{pruned}");
    assert!(
        pruned["in_use_blobs"].as_u64().is_some_and(|n| n >= 1),
        "the pull's fetched layer is reported kept: {pruned}"
    );
    assert!(!stale_path.exists(), "the unleased blob was removed");
    assert!(free_blob.is_file(), "the pull's layer was kept");

    gate.open();
    let out = pull.wait_with_output().expect("kernel pull");
    assert!(
        out.status.success(),
        "kernel pull failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(kernel["name"], "leased");
    assert_eq!(kernel["version"], "6.1.99-lease");
    let file = |key: &str| std::fs::read(kernel[key].as_str().expect(key)).expect(key);
    assert_eq!(file("vmlinuz_path"), vmlinuz);
    assert!(file("vmlinux_path").starts_with(b"\x7fELF"));
    assert_eq!(file("initrd_path"), b"initrd of the lease test");
    let modules = PathBuf::from(kernel["modules_dir"].as_str().expect("modules"));
    assert_eq!(
        std::fs::read(modules.join("kernel/fs/ext4.ko")).expect("module"),
        b"ext4 module"
    );

    // The pull is done and its lease gone: both layers and the config go now.
    let pruned = env.json(&["image", "cache", "prune"]);
    assert_eq!(pruned["blobs"], 3, "{pruned}");
    assert!(!free_blob.exists());
    registry.stop();
}
