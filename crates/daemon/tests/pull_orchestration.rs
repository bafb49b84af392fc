//! The seed's PullImage tests, ported, plus the concurrency, cancellation, reuse and
//! publication cases. The image world is stubbed at the backend seam (as the seed stubbed
//! `pullAndFlatten`); reference parsing is the real one.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use banger_api::image::{Image, ImageRegisterParams, KernelChoice};
use banger_api::pull::ImagePullParams;
use banger_api::{ErrorCode, layout::Layout};
use banger_daemon::error::OpError;
use banger_daemon::images::Images;
use banger_daemon::kernels::Kernels;
use banger_daemon::kernels::content_store::SharedFiles;
use banger_daemon::oci_client::OciClient;
use banger_daemon::progress::OpContext;
use banger_daemon::pull::{ImagePuller, ParsedSource, PullBackend, ResolvedPull};
use banger_daemon::store::Store;

#[derive(Clone)]
enum Behaviour {
    /// Writes a small real ext4 filesystem with `etc/hello` = "world".
    Build,
    Fail(&'static str),
    /// Meets the test at the barrier twice (started, may finish), then builds.
    Gate(Arc<Barrier>),
    /// Cancels the operation's own context, then builds (the orchestration must notice).
    CancelMidway,
    /// Waits (at most 10 s) for the operation to be cancelled, then fails as cancelled.
    UntilCancelled,
}

struct Stub {
    behaviour: Mutex<Behaviour>,
    resolves: AtomicUsize,
    builds: Arc<AtomicUsize>,
}

impl Stub {
    fn new(b: Behaviour) -> Arc<Stub> {
        Arc::new(Stub {
            behaviour: Mutex::new(b),
            resolves: AtomicUsize::new(0),
            builds: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl PullBackend for Stub {
    fn prune_cache(&self, dry_run: bool) -> Result<banger_api::image::CachePruned, OpError> {
        Ok(banger_api::image::CachePruned {
            dry_run,
            blobs: 0,
            bytes: 0,
            in_use_blobs: 0,
            in_use_bytes: 0,
        })
    }
    fn parse(&self, source: &str) -> Result<ParsedSource, OpError> {
        banger_daemon::oci_client::parse_source(source)
    }
    fn resolve(
        &self,
        _: &ParsedSource,
        _: Option<&str>,
        _: &OpContext,
    ) -> Result<Box<dyn ResolvedPull>, OpError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(StubImage {
            behaviour: self.behaviour.lock().expect("lock").clone(),
            builds: self.builds.clone(),
        }))
    }
}

struct StubImage {
    behaviour: Behaviour,
    builds: Arc<AtomicUsize>,
}

impl ResolvedPull for StubImage {
    fn manifest_digest(&self) -> &str {
        "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    }
    fn platform(&self) -> &str {
        "linux/amd64"
    }
    fn build_rootfs(&self, dest: &Path, size: Option<u64>, ctx: &OpContext) -> Result<(), OpError> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::Fail(msg) => return Err(OpError::Failed(msg.to_string())),
            Behaviour::Gate(b) => {
                b.wait();
                b.wait();
            }
            Behaviour::CancelMidway => ctx.cancel(),
            Behaviour::UntilCancelled => {
                let start = std::time::Instant::now();
                while !ctx.is_cancelled() && start.elapsed().as_secs() < 10 {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Err(OpError::Cancelled);
            }
            Behaviour::Build => {}
        }
        write_tiny_ext4(dest, size)
    }
}

fn write_tiny_ext4(dest: &Path, size: Option<u64>) -> Result<(), OpError> {
    use banger_ext4::{EntryKind, Ext4Writer, Metadata, Options, SizePolicy, Timestamp};
    let mut opts = Options::default();
    if let Some(s) = size {
        opts.size = SizePolicy::Exact(s);
    }
    let fail = |e: banger_ext4::Error| OpError::Failed(e.to_string());
    let mut w = Ext4Writer::create(dest, opts).map_err(fail)?;
    let meta = Metadata {
        uid: 0,
        gid: 0,
        mode: 0o644,
        mtime: Timestamp { sec: 1, nsec: 0 },
        atime: Timestamp { sec: 1, nsec: 0 },
        ctime: Timestamp { sec: 1, nsec: 0 },
        xattrs: vec![],
    };
    w.add(
        Path::new("etc/hello"),
        &meta,
        EntryKind::File {
            size: 5,
            data: &mut &b"world"[..],
        },
    )
    .map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(())
}

struct Fixture {
    _dir: tempfile::TempDir,
    layout: Layout,
    store: Arc<Store>,
    images: Images,
    puller: ImagePuller,
    kernels: Kernels,
    stub: Arc<Stub>,
    files: PathBuf,
}

fn fixture(b: Behaviour) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let layout = Layout {
        state_dir: root.join("state"),
        cache_dir: root.join("cache"),
        runtime_dir: root.join("run"),
    };
    std::fs::create_dir_all(layout.images_dir()).expect("mkdir");
    let store = Arc::new(Store::open(&root.join("db")).expect("store"));
    let stub = Stub::new(b);
    let files = root.join("files");
    std::fs::create_dir_all(files.join("modules")).expect("mkdir");
    std::fs::write(files.join("vmlinux"), b"kernel").expect("write");
    std::fs::write(files.join("initrd.img"), b"initrd").expect("write");
    std::fs::write(files.join("modules/modules.dep"), b"").expect("write");
    let shared = SharedFiles::open(&layout.state_dir);
    Fixture {
        images: Images::new(layout.clone(), store.clone(), shared.clone()),
        puller: ImagePuller::new(
            layout.images_dir(),
            store.clone(),
            stub.clone(),
            shared.clone(),
        ),
        kernels: Kernels::new(
            layout.clone(),
            store.clone(),
            Arc::new(OciClient::open(&layout).expect("oci client")),
            shared,
        ),
        layout,
        store,
        stub,
        files,
        _dir: dir,
    }
}

impl Fixture {
    fn params(&self, reference: &str) -> ImagePullParams {
        ImagePullParams {
            reference: reference.into(),
            kernel: KernelChoice {
                kernel_path: Some(self.file("vmlinux")),
                initrd_path: Some(self.file("initrd.img")),
                modules_dir: Some(self.file("modules")),
                ..Default::default()
            },
            ..Default::default()
        }
    }
    fn file(&self, rel: &str) -> String {
        self.files.join(rel).to_str().expect("utf8").into()
    }
    fn pull(&self, p: ImagePullParams) -> Result<Image, OpError> {
        self.puller
            .pull(&self.images, &self.kernels, p, &OpContext::detached())
    }
    fn stagings(&self) -> Vec<String> {
        std::fs::read_dir(self.layout.images_dir())
            .expect("read images dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".staging"))
            .collect()
    }
    fn image_dirs(&self) -> usize {
        std::fs::read_dir(self.layout.images_dir())
            .expect("read")
            .count()
    }
}

#[test]
fn happy_path_publishes_a_managed_image_with_all_artifacts() {
    let f = fixture(Behaviour::Build);
    let image = f
        .pull(f.params("docker.io/library/debian:bookworm"))
        .expect("pull");
    assert_eq!(image.name, "debian-bookworm");
    assert!(image.managed);
    let dir = PathBuf::from(image.artifact_dir.as_deref().expect("artifact dir"));
    assert!(dir.starts_with(f.layout.images_dir()), "{}", dir.display());
    for rel in ["rootfs.ext4", "kernel", "initrd.img", "modules/modules.dep"] {
        assert!(dir.join(rel).exists(), "missing artifact {rel}");
    }
    assert_eq!(
        std::fs::read(dir.join("kernel")).expect("kernel"),
        b"kernel"
    );
    assert_eq!(
        image.source_ref.as_deref(),
        Some("docker.io/library/debian:bookworm")
    );
    assert_eq!(image.platform.as_deref(), Some("linux/amd64"));
    assert!(image.size_bytes.expect("size") >= 1 << 30, "1 GiB floor");
    assert!(f.stagings().is_empty(), "staging left: {:?}", f.stagings());
    assert_eq!(f.store.list_images().expect("list"), vec![image]);
}

#[test]
fn existing_name_is_rejected_before_any_work() {
    let f = fixture(Behaviour::Build);
    f.images
        .register(ImageRegisterParams {
            name: "debian-bookworm".into(),
            rootfs_path: f.file("vmlinux"),
            kernel: KernelChoice {
                kernel_path: Some(f.file("vmlinux")),
                ..Default::default()
            },
        })
        .expect("register");
    let err = f
        .pull(f.params("docker.io/library/debian:bookworm"))
        .expect_err("must fail");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        f.stub.resolves.load(Ordering::SeqCst),
        0,
        "no work before the name check"
    );
    assert_eq!(f.image_dirs(), 0);
}

#[test]
fn a_kernel_is_required() {
    let f = fixture(Behaviour::Build);
    let err = f
        .pull(ImagePullParams {
            reference: "docker.io/library/debian:bookworm".into(),
            ..Default::default()
        })
        .expect_err("must fail");
    assert!(err.to_string().contains("kernel"), "{err}");
    assert_eq!(f.stub.resolves.load(Ordering::SeqCst), 0);
    assert_eq!(f.image_dirs(), 0);
}

#[test]
fn staging_is_cleaned_when_the_fetch_fails() {
    let f = fixture(Behaviour::Fail("network borked"));
    let err = f
        .pull(f.params("docker.io/library/debian:bookworm"))
        .expect_err("must fail");
    assert!(err.to_string().contains("network borked"), "{err}");
    assert_eq!(f.image_dirs(), 0, "staging left behind");
    assert!(f.store.list_images().expect("list").is_empty());
}

#[test]
fn invalid_reference_is_a_bad_request() {
    let f = fixture(Behaviour::Build);
    let err = f.pull(f.params("Debian:Bookworm")).expect_err("must fail");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    assert_eq!(f.image_dirs(), 0);
}

#[test]
fn concurrent_pulls_of_one_name_make_one_image() {
    let gate = Arc::new(Barrier::new(2));
    let f = Arc::new(fixture(Behaviour::Gate(gate.clone())));
    let first = {
        let f = f.clone();
        std::thread::spawn(move || f.pull(f.params("alpine:3.20")))
    };
    gate.wait(); // the first pull is inside build_rootfs
    let err = f
        .pull(f.params("alpine:3.20"))
        .expect_err("second pull of the name");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert!(err.to_string().contains("being pulled"), "{err}");
    gate.wait(); // let the first finish
    let image = first.join().expect("thread").expect("first pull");
    assert_eq!(image.name, "alpine-3-20");
    assert_eq!(f.store.list_images().expect("list").len(), 1);
    assert!(f.stagings().is_empty());
}

#[test]
fn a_register_racing_the_pull_wins_and_the_pull_cleans_up() {
    let gate = Arc::new(Barrier::new(2));
    let f = Arc::new(fixture(Behaviour::Gate(gate.clone())));
    let pull = {
        let f = f.clone();
        std::thread::spawn(move || f.pull(f.params("alpine:3.20")))
    };
    gate.wait();
    f.images
        .register(ImageRegisterParams {
            name: "alpine-3-20".into(),
            rootfs_path: f.file("vmlinux"),
            kernel: KernelChoice {
                kernel_path: Some(f.file("vmlinux")),
                ..Default::default()
            },
        })
        .expect("register during the pull");
    gate.wait();
    let err = pull
        .join()
        .expect("thread")
        .expect_err("publication must see the name taken");
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    assert_eq!(
        f.image_dirs(),
        0,
        "neither staging nor a final dir may remain"
    );
}

#[test]
fn cancellation_removes_staging() {
    let f = fixture(Behaviour::CancelMidway);
    let err = f.pull(f.params("alpine:3.20")).expect_err("cancelled");
    assert!(matches!(err, OpError::Cancelled), "{err}");
    assert_eq!(f.image_dirs(), 0);
    assert!(f.store.list_images().expect("list").is_empty());
}

#[test]
fn same_digest_reuses_the_converted_rootfs() {
    let f = fixture(Behaviour::Build);
    let a = f.pull(f.params("alpine:3.20")).expect("first");
    let mut p = f.params("alpine:3.20");
    p.name = Some("again".into());
    let b = f.pull(p).expect("second");
    assert_eq!(f.stub.builds.load(Ordering::SeqCst), 1, "converted once");
    let ino = |i: &Image| std::fs::metadata(&i.rootfs_path).expect("stat").ino();
    assert_eq!(ino(&a), ino(&b), "rootfs shared");
    // Deleting the first leaves the second intact.
    f.images.delete("alpine-3-20").expect("delete");
    assert!(Path::new(&b.rootfs_path).is_file());
    // A different size cannot share.
    let mut p = f.params("alpine:3.20");
    p.name = Some("bigger".into());
    p.size_bytes = Some(2 << 30);
    let c = f.pull(p).expect("third");
    assert_eq!(c.size_bytes, Some(2 << 30));
    assert_eq!(f.stub.builds.load(Ordering::SeqCst), 2);
}

#[test]
fn deleting_another_image_during_a_pull_is_fine() {
    let gate = Arc::new(Barrier::new(2));
    let f = Arc::new(fixture(Behaviour::Gate(gate.clone())));
    f.images
        .register(ImageRegisterParams {
            name: "bystander".into(),
            rootfs_path: f.file("vmlinux"),
            kernel: KernelChoice {
                kernel_path: Some(f.file("vmlinux")),
                ..Default::default()
            },
        })
        .expect("register");
    let pull = {
        let f = f.clone();
        std::thread::spawn(move || f.pull(f.params("alpine:3.20")))
    };
    gate.wait(); // the pull is inside build_rootfs, its staging dir on disk
    f.images
        .delete("bystander")
        .expect("delete during the pull");
    gate.wait();
    let image = pull
        .join()
        .expect("thread")
        .expect("the pull is unaffected");
    let names: Vec<String> = f
        .store
        .list_images()
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec![image.name]);
    assert!(f.stagings().is_empty());
}

/// Everything under `<state>/kernel-files/` but its index.
fn kernel_files(f: &Fixture) -> Vec<String> {
    let root = f.layout.state_dir.join("kernel-files");
    let mut names = Vec::new();
    for sub in ["", "blobs", "trees"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if sub.is_empty() && ["blobs", "trees", "index.json"].contains(&name.as_str()) {
                    continue;
                }
                names.push(format!("{sub}/{name}"));
            }
        }
    }
    names
}

#[test]
fn a_failed_build_leaves_no_kernel_files() {
    // The kernel files are imported while the rootfs is built: a failed build must not
    // leave them behind.
    let f = fixture(Behaviour::Fail("layer borked"));
    let err = f.pull(f.params("alpine:3.20")).expect_err("must fail");
    assert!(err.to_string().contains("layer borked"), "{err}");
    assert_eq!(f.image_dirs(), 0);
    assert_eq!(kernel_files(&f), Vec::<String>::new());
}

#[test]
fn a_failed_kernel_import_stops_the_build_and_cleans_up() {
    let f = fixture(Behaviour::UntilCancelled);
    let fifo = std::ffi::CString::new(f.file("modules/pipe")).expect("path");
    // SAFETY: `fifo` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let err = f.pull(f.params("alpine:3.20")).expect_err("must fail");
    // The import's own error, not the cancellation it caused.
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(started.elapsed().as_secs() < 5, "the build was not stopped");
    assert_eq!(f.image_dirs(), 0);
    assert!(f.store.list_images().expect("list").is_empty());
    assert_eq!(kernel_files(&f), Vec::<String>::new());
    // Nothing stays pinned or half-made: the next pull succeeds.
    std::fs::remove_file(f.file("modules/pipe")).expect("rm fifo");
    *f.stub.behaviour.lock().expect("lock") = Behaviour::Build;
    f.pull(f.params("alpine:3.20")).expect("pull");
}
