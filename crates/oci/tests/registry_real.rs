//! Pulls from a real `docker-registry` on loopback, images pushed with `skopeo`, and
//! from local `oci:`, `oci-archive:`, `docker-archive:` sources.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use banger_oci::{
    BlobCache, CollectSink, CredentialStore, Error, Limits, Platform, Progress, Puller,
    RegistryOptions, Source, flatten,
};
use banger_testkit::layers::LayerBuilder;
use banger_testkit::oci_image::{self, Compression, Layer};
use banger_testkit::registry::Registry;
use std::sync::{Arc, Mutex};

fn image_layers(c: Compression) -> Vec<Layer> {
    vec![
        Layer {
            tar: LayerBuilder::new()
                .dir("etc", 0o755)
                .file("etc/hostname", b"base\n")
                .file("etc/gone", b"x")
                .finish(),
            compression: c,
        },
        Layer {
            tar: LayerBuilder::new()
                .file("etc/hostname", b"top\n")
                .whiteout("etc/gone")
                .finish(),
            compression: c,
        },
    ]
}

fn puller(cache: &std::path::Path) -> Puller {
    let opts = RegistryOptions {
        backoff: std::time::Duration::from_millis(10),
        ..Default::default()
    };
    Puller::new(
        BlobCache::open(cache).unwrap(),
        opts,
        CredentialStore::default(),
    )
    .unwrap()
}

async fn pull(
    p: &Puller,
    src: &str,
    platform: &str,
) -> Result<(CollectSink, Vec<Progress>, banger_oci::ResolvedImage), Error> {
    let img = p
        .resolve(&Source::parse(src)?, &Platform::parse(platform)?)
        .await?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let inputs = p
        .fetch_layers(&img, Arc::new(move |e| ev.lock().unwrap().push(e)))
        .await?;
    let sink = tokio::task::spawn_blocking(move || {
        let mut s = CollectSink::default();
        flatten(&inputs, &mut s, &Limits::default()).map(|_| s)
    })
    .await
    .unwrap()?;
    let ev = events.lock().unwrap().clone();
    Ok((sink, ev, img))
}

fn file(s: &CollectSink, p: &str) -> Option<Vec<u8>> {
    s.entries
        .iter()
        .find(|(e, _)| e.path == p)
        .and_then(|(_, d)| d.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_gzip_zstd_and_v2s2_images_and_reuses_the_cache() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    for (i, (c, extra)) in [
        (Compression::Gzip, vec![]),
        (Compression::Zstd, vec!["--dest-compress-format", "zstd"]),
        (Compression::Gzip, vec!["--format", "v2s2"]),
    ]
    .into_iter()
    .enumerate()
    {
        let layout = tmp.path().join(format!("layout{i}"));
        oci_image::single(&layout, "t", &image_layers(c));
        reg.push(
            &format!("oci:{}:t", layout.display()),
            &format!("img{i}:v{i}"),
            &extra,
        );
        let cache = tmp.path().join(format!("cache{i}"));
        let p = puller(&cache);
        let (s, ev, img) = pull(&p, &format!("{}/img{i}:v{i}", reg.host()), "linux/amd64")
            .await
            .unwrap();
        assert_eq!(
            file(&s, "etc/hostname").as_deref(),
            Some(&b"top\n"[..]),
            "variant {i}"
        );
        assert!(file(&s, "etc/gone").is_none());
        let want_mt = ["tar+gzip", "tar+zstd", "docker.image.rootfs.diff.tar.gzip"][i];
        assert!(
            img.layers.iter().all(|l| l.media_type.ends_with(want_mt)),
            "{:?}",
            img.layers
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e, Progress::LayerDone { cached: false, .. }))
        );
        assert!(ev.iter().any(|e| matches!(e, Progress::LayerBytes { .. })));
        // Digest-pinned pull hits the cache only.
        let pinned = format!("{}/img{i}@{}", reg.host(), img.manifest_digest);
        let (s2, ev2, img2) = pull(&p, &pinned, "linux/amd64").await.unwrap();
        assert_eq!(img2.manifest_digest, img.manifest_digest);
        assert_eq!(s2.entries.len(), s.entries.len());
        assert!(
            ev2.iter()
                .all(|e| !matches!(e, Progress::LayerDone { cached: false, .. })),
            "{ev2:?}"
        );
        // No partial or temp files left behind.
        assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_platform_selection() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let decoy = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"arm64").finish(),
        compression: Compression::Gzip,
    }];
    let amd = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"amd64").finish(),
        compression: Compression::Gzip,
    }];
    oci_image::multi_arch(&layout, "t", &amd, &decoy);
    reg.push(
        &format!("oci:{}:t", layout.display()),
        "multi:t",
        &["--all"],
    );
    let p = puller(&tmp.path().join("cache"));
    let src = format!("{}/multi:t", reg.host());
    let (s, _, img) = pull(&p, &src, "linux/amd64").await.unwrap();
    assert_eq!(file(&s, "arch").as_deref(), Some(&b"amd64"[..]));
    assert!(img.index_digest.is_some());
    let (s, _, _) = pull(&p, &src, "linux/arm64").await.unwrap();
    assert_eq!(file(&s, "arch").as_deref(), Some(&b"arm64"[..]));
    let e = pull(&p, &src, "linux/s390x").await.unwrap_err().to_string();
    assert!(
        e.contains("linux/amd64") && e.contains("linux/arm64/v8") && !e.contains("unknown"),
        "{e}"
    );
    // Also as a Docker manifest list.
    reg.push(
        &format!("oci:{}:t", layout.display()),
        "multi-v2s2:t",
        &["--all", "--format", "v2s2"],
    );
    let (s, _, _) = pull(&p, &format!("{}/multi-v2s2:t", reg.host()), "linux/amd64")
        .await
        .unwrap();
    assert_eq!(file(&s, "arch").as_deref(), Some(&b"amd64"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repo_tag_and_unreachable_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"));
    let e = pull(&p, &format!("{}/nothing:here", reg.host()), "linux/amd64")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let layout = tmp.path().join("layout");
    oci_image::single(&layout, "t", &image_layers(Compression::Gzip));
    reg.push(&format!("oci:{}:t", layout.display()), "some:t", &[]);
    let e = pull(&p, &format!("{}/some:other", reg.host()), "linux/amd64")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let e = pull(&p, &format!("{}/some:t", reg.host()), "linux/arm64")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PlatformNotAvailable { .. }), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = pull(&p, &format!("127.0.0.1:{port}/x:y"), "linux/amd64")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    oci_image::single(&layout, "t", &image_layers(Compression::Gzip));
    let p = puller(&tmp.path().join("cache"));
    let (s, _, _) = pull(&p, &format!("oci:{}:t", layout.display()), "linux/amd64")
        .await
        .unwrap();
    assert_eq!(file(&s, "etc/hostname").as_deref(), Some(&b"top\n"[..]));
    let e = pull(&p, &format!("oci:{}:nope", layout.display()), "linux/amd64")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let archive = tmp.path().join("img.tar");
    banger_testkit::tools::run(
        banger_testkit::tools::command("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:t", layout.display()))
            .arg(format!("oci-archive:{}:t", archive.display())),
    );
    let (s, _, _) = pull(
        &p,
        &format!("oci-archive:{}:t", archive.display()),
        "linux/amd64",
    )
    .await
    .unwrap();
    assert_eq!(file(&s, "etc/hostname").as_deref(), Some(&b"top\n"[..]));
    let darchive = tmp.path().join("docker.tar");
    banger_testkit::tools::run(
        banger_testkit::tools::command("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:t", layout.display()))
            .arg(format!("docker-archive:{}:repo/x:t", darchive.display())),
    );
    let (s, _, img) = pull(
        &p,
        &format!("docker-archive:{}", darchive.display()),
        "linux/amd64",
    )
    .await
    .unwrap();
    assert_eq!(file(&s, "etc/hostname").as_deref(), Some(&b"top\n"[..]));
    assert_eq!(img.layers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_multi_arch_layout_and_docker_save_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("multi");
    let decoy = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"arm64").finish(),
        compression: Compression::Gzip,
    }];
    let amd = vec![Layer {
        tar: LayerBuilder::new().file("arch", b"amd64").finish(),
        compression: Compression::Zstd,
    }];
    oci_image::multi_arch(&layout, "t", &amd, &decoy);
    let p = puller(&tmp.path().join("cache"));
    let (s, _, _) = pull(&p, &format!("oci:{}:t", layout.display()), "linux/amd64")
        .await
        .unwrap();
    assert_eq!(file(&s, "arch").as_deref(), Some(&b"amd64"[..]));
    let (s, _, _) = pull(&p, &format!("oci:{}", layout.display()), "linux/arm64/v8")
        .await
        .unwrap();
    assert_eq!(file(&s, "arch").as_deref(), Some(&b"arm64"[..]));

    // Old `docker save` layout: <id>/layer.tar, a repeated layer stored as a symlink.
    let l1 = LayerBuilder::new().file("one", b"1").finish();
    let l2 = LayerBuilder::new().file("two", b"2").finish();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [oci_image::sha256(&l1), oci_image::sha256(&l2), oci_image::sha256(&l1)]}});
    let manifest = serde_json::json!([{"Config": "cfg.json", "RepoTags": ["x:y"], "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar"]}]);
    let archive = LayerBuilder::new()
        .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
        .file("cfg.json", &serde_json::to_vec(&config).unwrap())
        .dir("a", 0o755)
        .file("a/layer.tar", &l1)
        .file("b/layer.tar", &l2)
        .symlink("c/layer.tar", "../a/layer.tar")
        .finish();
    let path = tmp.path().join("save.tar");
    std::fs::write(&path, archive).unwrap();
    let (s, _, img) = pull(
        &p,
        &format!("docker-archive:{}", path.display()),
        "linux/amd64",
    )
    .await
    .unwrap();
    assert_eq!(img.layers.len(), 3);
    assert_eq!(file(&s, "one").as_deref(), Some(&b"1"[..]));
    assert_eq!(file(&s, "two").as_deref(), Some(&b"2"[..]));
    // A symlink escaping the archive is refused.
    let evil = LayerBuilder::new()
        .file("manifest.json", b"[]")
        .symlink("c/layer.tar", "../../etc/passwd")
        .finish();
    std::fs::write(&path, evil).unwrap();
    let e = pull(
        &p,
        &format!("docker-archive:{}", path.display()),
        "linux/amd64",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("escapes"), "{e}");
}

/// `docker save a b` holds two images: the source names one with skopeo's syntax, by tag
/// (Docker-normalised) or by index; without a choice the error lists what is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_image_docker_save_picks_one() {
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"));
    let mut archive = LayerBuilder::new();
    let mut manifest = Vec::new();
    for (i, (tag, content)) in [
        ("debian:bookworm", "first"),
        ("localhost:5000/app:v2", "second"),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = LayerBuilder::new()
            .file("which", content.as_bytes())
            .finish();
        let config = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [oci_image::sha256(&layer)]}});
        archive = archive
            .file(
                &format!("cfg{i}.json"),
                &serde_json::to_vec(&config).unwrap(),
            )
            .file(&format!("l{i}/layer.tar"), &layer);
        manifest.push(serde_json::json!({
            "Config": format!("cfg{i}.json"), "RepoTags": [tag], "Layers": [format!("l{i}/layer.tar")]
        }));
    }
    let archive = archive
        .file("manifest.json", &serde_json::to_vec(&manifest).unwrap())
        .finish();
    let path = tmp.path().join("two.tar");
    std::fs::write(&path, archive).unwrap();
    let src = |sel: &str| format!("docker-archive:{}{sel}", path.display());

    for (sel, want) in [
        (":debian:bookworm", "first"),
        // The same tag as Docker spells it in full.
        (":docker.io/library/debian:bookworm", "first"),
        (":localhost:5000/app:v2", "second"),
        (":@1", "second"),
        (":@0", "first"),
    ] {
        let (s, _, _) = pull(&p, &src(sel), "linux/amd64").await.unwrap();
        assert_eq!(file(&s, "which").as_deref(), Some(want.as_bytes()), "{sel}");
    }
    for (sel, says) in [
        ("", "holds 2 images"),
        (":alpine:3", "no image tagged alpine:3"),
        (":@2", "no image @2"),
    ] {
        let e = pull(&p, &src(sel), "linux/amd64").await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(says)
                && text.contains("@0 debian:bookworm")
                && text.contains("@1 localhost:5000/app:v2"),
            "{sel}: {text}"
        );
    }
}
