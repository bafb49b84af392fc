//! A hostile registry cannot exhaust memory or disk, nor steal credentials: endless
//! manifest and token bodies, oversized or lying descriptors, a decompression bomb, and
//! token realms off TLS, against an in-process raw-HTTP registry on loopback.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use banger_oci::manifest::{MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use banger_oci::registry::MAX_TOKEN_RESPONSE_BYTES;
use banger_oci::{
    BlobCache, CredentialStore, Entry, EntrySink, Error, Platform, Puller, RegistryOptions,
    SinkError, Source, flatten,
};
use banger_testkit::oci_image::{MT_CONFIG, MT_LAYER_ZSTD, MT_MANIFEST, sha256};
use banger_testkit::token_auth::base64;
use banger_testkit::wait;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// What an endless body may put in flight past the client's limit: the loopback socket
/// buffers on both sides (autotuned to a few MiB each).
const SOCKET_SLACK: u64 = 32 << 20;
/// How much an endless body offers: far more than any limit.
const ENDLESS: u64 = 1 << 30;

enum Reply {
    Body {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// `ENDLESS` bytes of JSON-ish filler written lazily, 64 KiB at a time, with this
    /// `Content-Length` (or none: the body runs until the connection closes).
    Endless { declared: Option<u64> },
    /// A 200 body sent without `Content-Length` (it runs until the connection closes).
    Unannounced(Vec<u8>),
    /// A body dribbled one byte at a time, each after `gap`.
    Trickle { gap: Duration },
}

impl Reply {
    fn ok(content_type: &str, body: Vec<u8>) -> Reply {
        Reply::Body {
            status: "200 OK",
            headers: vec![("Content-Type", content_type.to_string())],
            body,
        }
    }

    fn not_found() -> Reply {
        Reply::Body {
            status: "404 Not Found",
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync;

/// One fake server: requests it saw (path and Authorization), bytes its endless bodies
/// got into the socket, and whether every endless writer has stopped.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    endless_sent: Arc<AtomicU64>,
    endless_running: Arc<AtomicU64>,
    endless_started: Arc<AtomicBool>,
}

impl Server {
    async fn start(
        handler: impl Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            requests: Arc::default(),
            endless_sent: Arc::default(),
            endless_running: Arc::default(),
            endless_started: Arc::default(),
        };
        let handler: Arc<Handler> = Arc::new(handler);
        let (requests, sent, running, started) = (
            server.requests.clone(),
            server.endless_sent.clone(),
            server.endless_running.clone(),
            server.endless_started.clone(),
        );
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (h, r, sent, running, started) = (
                    handler.clone(),
                    requests.clone(),
                    sent.clone(),
                    running.clone(),
                    started.clone(),
                );
                tokio::spawn(async move {
                    serve(s, &*h, &r, &sent, &running, &started).await;
                });
            }
        });
        server
    }

    fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Waits until every endless body stopped (the client hung up) and returns what they
    /// wrote into the socket.
    fn endless_bytes_after_hangup(&self) -> u64 {
        assert!(
            self.endless_started.load(Ordering::SeqCst),
            "no endless body was served"
        );
        wait::until("the endless body's writer to see the hang-up", || {
            self.endless_running.load(Ordering::SeqCst) == 0
        });
        self.endless_sent.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut s: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<(String, String)>>,
    sent: &AtomicU64,
    running: &AtomicU64,
    started: &AtomicBool,
) {
    let Some((path, headers)) = common::read_request_head(&mut s).await else {
        return;
    };
    requests.lock().unwrap().push((
        path.clone(),
        headers.get("authorization").cloned().unwrap_or_default(),
    ));
    match handler(&path, &headers) {
        Reply::Body {
            status,
            headers,
            body,
        } => {
            let mut h = format!(
                "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("\r\n");
            let _ = s.write_all(h.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.flush().await;
        }
        Reply::Unannounced(body) => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.flush().await;
        }
        Reply::Endless { declared } => {
            running.fetch_add(1, Ordering::SeqCst);
            started.store(true, Ordering::SeqCst);
            let length = declared
                .map(|n| format!("Content-Length: {n}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {MT_MANIFEST}\r\n{length}\r\n"
            );
            if s.write_all(head.as_bytes()).await.is_ok() {
                let chunk = vec![b' '; 64 << 10];
                let mut done = 0u64;
                while done < ENDLESS && s.write_all(&chunk).await.is_ok() {
                    done += chunk.len() as u64;
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
        }
        Reply::Trickle { gap } => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000000\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_ok() {
                while s.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(gap).await;
                }
            }
        }
    }
}

fn opts() -> RegistryOptions {
    RegistryOptions {
        backoff: Duration::from_millis(5),
        read_timeout: Duration::from_secs(5),
        attempts: 2,
        ..Default::default()
    }
}

fn puller(cache: &std::path::Path, opts: RegistryOptions, creds: CredentialStore) -> Puller {
    Puller::new(BlobCache::open(cache).unwrap(), opts, creds).unwrap()
}

async fn resolve(p: &Puller, port: u16) -> Result<banger_oci::ResolvedImage, Error> {
    p.resolve(
        &Source::parse(&format!("127.0.0.1:{port}/repo:t")).unwrap(),
        &Platform::linux_amd64(),
    )
    .await
}

/// Files anywhere under the cache (finished blobs and temp files alike).
fn cache_files(cache: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["blobs/sha256", "tmp"] {
        if let Ok(rd) = std::fs::read_dir(cache.join(sub)) {
            out.extend(rd.map(|e| format!("{sub}/{}", e.unwrap().file_name().to_string_lossy())));
        }
    }
    out
}

/// An OCI manifest naming `config` (digest, declared size) and `layers`.
fn manifest(config: (&str, u64), layers: &[(&str, u64)]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": MT_LAYER_ZSTD, "digest": d, "size": n}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

fn config(diff_ids: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Serves `manifest` for `repo:t` and `blobs` by digest.
fn image_handler(
    manifest: Vec<u8>,
    blobs: HashMap<String, Reply>,
) -> impl Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync + 'static {
    let blobs = Mutex::new(blobs);
    move |path, _| {
        if path == "/v2/repo/manifests/t" {
            return Reply::ok(MT_MANIFEST, manifest.clone());
        }
        let Some(d) = path.strip_prefix("/v2/repo/blobs/") else {
            return Reply::not_found();
        };
        match blobs.lock().unwrap().get(d) {
            Some(Reply::Body {
                status,
                headers,
                body,
            }) => Reply::Body {
                status,
                headers: headers.clone(),
                body: body.clone(),
            },
            Some(Reply::Unannounced(body)) => Reply::Unannounced(body.clone()),
            _ => Reply::not_found(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_cut_at_the_limit() {
    for declared in [None, Some(ENDLESS)] {
        let f = Server::start(move |_, _| Reply::Endless { declared }).await;
        let c = tempfile::tempdir().unwrap();
        let e = resolve(
            &puller(c.path(), opts(), CredentialStore::default()),
            f.port,
        )
        .await
        .unwrap_err();
        match &e {
            Error::TooLarge { what, limit } => {
                assert!(what.contains("manifest repo:t"), "{e}");
                assert_eq!(*limit, MAX_MANIFEST_BYTES);
                assert!(e.to_string().contains("8 MiB"), "{e}");
            }
            other => panic!("{declared:?}: {other}"),
        }
        let sent = f.endless_bytes_after_hangup();
        match declared {
            // Announced as 1 GiB: refused before a body byte was read.
            Some(_) => assert!(sent <= SOCKET_SLACK, "{sent} bytes sent"),
            None => assert!(
                sent <= MAX_MANIFEST_BYTES + SOCKET_SLACK,
                "{sent} bytes sent"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_response_is_cut_at_the_limit() {
    let f = Server::start(|path, headers| {
        if path.starts_with("/token") {
            return Reply::Endless { declared: None };
        }
        let port = headers
            .get("host")
            .and_then(|h| h.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        Reply::Body {
            status: "401 Unauthorized",
            headers: vec![(
                "WWW-Authenticate",
                format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake""#),
            )],
            body: b"{}".to_vec(),
        }
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = resolve(
        &puller(c.path(), opts(), CredentialStore::default()),
        f.port,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge { what, limit } if what.contains("token response") && *limit == MAX_TOKEN_RESPONSE_BYTES),
        "{e}"
    );
    let sent = f.endless_bytes_after_hangup();
    assert!(
        sent <= MAX_TOKEN_RESPONSE_BYTES + SOCKET_SLACK,
        "{sent} bytes sent"
    );
}

#[tokio::test]
async fn a_trickled_manifest_hits_the_document_timeout() {
    let f = Server::start(|_, _| Reply::Trickle {
        gap: Duration::from_millis(20),
    })
    .await;
    let c = tempfile::tempdir().unwrap();
    let o = RegistryOptions {
        document_timeout: Duration::from_millis(300),
        ..opts()
    };
    let e = resolve(&puller(c.path(), o, CredentialStore::default()), f.port)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Network { message, .. } if message.contains("not received within")),
        "{e}"
    );
}

#[tokio::test]
async fn a_config_declaring_100_gib_is_refused_before_download() {
    let cfg = config(&[]);
    let d = sha256(&cfg);
    let m = manifest((&d, 100 << 30), &[]);
    let blobs = HashMap::from([(d.clone(), Reply::ok(MT_CONFIG, cfg))]);
    let f = Server::start(image_handler(m, blobs)).await;
    let c = tempfile::tempdir().unwrap();
    let e = resolve(
        &puller(c.path(), opts(), CredentialStore::default()),
        f.port,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, Error::TooLarge { what, limit } if what.contains("image config") && *limit == MAX_CONFIG_BYTES),
        "{e}"
    );
    assert!(
        !f.paths().iter().any(|p| p.contains("/blobs/")),
        "{:?}",
        f.paths()
    );
    assert_eq!(cache_files(c.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_config_longer_than_declared_is_refused_and_not_cached() {
    let cfg = config(&[]);
    let d = sha256(&cfg);
    let declared = cfg.len() as u64;
    let m = manifest((&d, declared), &[]);
    let mut padded = cfg.clone();
    padded.extend(std::iter::repeat_n(b' ', 1 << 20));
    // Both ways a server can send too much: announced up front, or only in the stream.
    for announced in [true, false] {
        let reply = if announced {
            Reply::ok(MT_CONFIG, padded.clone())
        } else {
            Reply::Unannounced(padded.clone())
        };
        let blobs = HashMap::from([(d.clone(), reply)]);
        let f = Server::start(image_handler(m.clone(), blobs)).await;
        let c = tempfile::tempdir().unwrap();
        let e = resolve(
            &puller(c.path(), opts(), CredentialStore::default()),
            f.port,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Error::SizeMismatch { expected, .. } if *expected == declared),
            "{e}"
        );
        assert_eq!(cache_files(c.path()), Vec::<String>::new());
    }
}

/// A zstd frame of one tar header for a 4 GiB file `zeros`, then `zero_blocks` RLE blocks
/// of 128 KiB of zeros each: 4 bytes of blob per 128 KiB of tar.
fn zstd_bomb(zero_blocks: usize) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..5].copy_from_slice(b"zeros");
    let field = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}", w = len - 1);
        h[at..at + len - 1].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, 0o644);
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, 4 << 30);
    field(&mut h, 136, 12, 1_700_000_000);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    // Magic; no checksum, no content size, not single-segment; window 2^17.
    let mut z = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let block = |last: bool, kind: u32, size: u32| {
        let v = u32::from(last) | (kind << 1) | (size << 3);
        v.to_le_bytes()[..3].to_vec()
    };
    z.extend(block(false, 0, 512));
    z.extend_from_slice(&h);
    for i in 0..zero_blocks {
        z.extend(block(i + 1 == zero_blocks, 1, 128 << 10));
        z.push(0);
    }
    z
}

/// Reads file data and throws it away, counting it.
#[derive(Default)]
struct CountSink {
    file_bytes: u64,
}

impl EntrySink for CountSink {
    fn entry(&mut self, _: &Entry, data: Option<&mut dyn Read>) -> Result<(), SinkError> {
        if let Some(r) = data {
            self.file_bytes += std::io::copy(r, &mut std::io::sink())?;
        }
        Ok(())
    }
    fn remove(&mut self, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_decompression_bomb_stops_at_the_image_budget() {
    // 1 GiB + 2 MiB of tar from ~33 KiB of blob: over the floor the image gets.
    let bomb = zstd_bomb((1 << 13) + 16);
    let layer = sha256(&bomb);
    // The diff_id is never reached: the budget stops the read first.
    let cfg = config(&[&sha256(b"never checked")]);
    let cd = sha256(&cfg);
    let m = manifest((&cd, cfg.len() as u64), &[(&layer, bomb.len() as u64)]);
    let blobs = HashMap::from([
        (cd.clone(), Reply::ok(MT_CONFIG, cfg)),
        (layer.clone(), Reply::ok(MT_LAYER_ZSTD, bomb.clone())),
    ]);
    let f = Server::start(image_handler(m, blobs)).await;
    let c = tempfile::tempdir().unwrap();
    let p = puller(c.path(), opts(), CredentialStore::default());
    let img = resolve(&p, f.port).await.unwrap();
    let limits = img.limits();
    assert_eq!(
        limits.max_unpacked_bytes,
        banger_oci::flatten::MIN_UNPACKED_BYTES
    );
    let inputs = p.fetch_layers(&img, Arc::new(|_| {})).await.unwrap();
    let mut sink = CountSink::default();
    let e = tokio::task::spawn_blocking(move || {
        flatten(&inputs, &mut sink, &limits)
            .map(|_| ())
            .map_err(|e| (e, sink.file_bytes))
    })
    .await
    .unwrap()
    .unwrap_err();
    let (e, streamed) = e;
    let msg = e.to_string();
    assert!(matches!(e, Error::LimitExceeded(_)), "{e}");
    assert!(
        msg.contains("1 GiB") && msg.contains("Limits::max_unpacked_bytes"),
        "{msg}"
    );
    assert!(msg.contains(&layer), "{msg}");
    assert!(streamed <= 1 << 30, "{streamed} bytes reached the sink");
    // Only whole, verified blobs are cached (config and the small bomb blob); no temp files.
    let tmp: Vec<_> = std::fs::read_dir(c.path().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// A registry on loopback whose bearer challenge names `realm`; the token endpoint
/// (`/token`) hands out `tok`, which the registry then accepts.
fn bearer_registry(
    realm: String,
) -> impl Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync + 'static {
    move |path, headers| {
        if headers.get("authorization").map(String::as_str) == Some("Bearer tok") {
            return Reply::not_found();
        }
        if path.starts_with("/token") {
            return Reply::ok("application/json", br#"{"token":"tok"}"#.to_vec());
        }
        Reply::Body {
            status: "401 Unauthorized",
            headers: vec![(
                "WWW-Authenticate",
                format!(r#"Bearer realm="{realm}",service="fake""#),
            )],
            body: b"{}".to_vec(),
        }
    }
}

fn creds_for(registry: &str) -> (tempfile::TempDir, CredentialStore) {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{registry}":{{"auth":"{}"}}}}}}"#,
            base64(b"alice:s3cret", false)
        ),
    )
    .unwrap();
    let s = CredentialStore::load(Some(&cfg)).unwrap();
    (d, s)
}

#[tokio::test]
async fn a_plain_http_realm_on_a_remote_host_gets_no_request() {
    // The realm is a real server, reachable as `auth.example` (pinned to loopback), so
    // a request would show up in its log: the control below proves it would.
    let realm =
        Server::start(|_, _| Reply::ok("application/json", br#"{"token":"tok"}"#.to_vec())).await;
    let name = format!("auth.example:{}", realm.port);
    let registry = Server::start(bearer_registry(format!("http://{name}/token"))).await;
    let reg = format!("127.0.0.1:{}", registry.port);
    let resolve_to = vec![(
        "auth.example".to_string(),
        std::net::SocketAddr::from(([127, 0, 0, 1], realm.port)),
    )];
    let (_d, creds) = creds_for(&reg);
    let c = tempfile::tempdir().unwrap();
    let o = RegistryOptions {
        resolve: resolve_to.clone(),
        ..opts()
    };
    let e = resolve(&puller(c.path(), o, creds), registry.port)
        .await
        .unwrap_err();
    match &e {
        Error::RealmRefused {
            registry,
            realm,
            reason,
        } => {
            assert_eq!(registry, &reg);
            assert!(realm.contains("auth.example"), "{e}");
            assert!(
                reason.contains("neither loopback nor listed as insecure"),
                "{e}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(realm.paths().is_empty(), "{:?}", realm.paths());
    assert_eq!(cache_files(c.path()), Vec::<String>::new());

    // Control: the same realm, marked insecure, is asked (with the credentials).
    let (_d, creds) = creds_for(&reg);
    let o = RegistryOptions {
        resolve: resolve_to,
        insecure: vec![name],
        ..opts()
    };
    // The registry then answers 404 for the manifest: only the token request matters.
    let e = resolve(&puller(c.path(), o, creds), registry.port)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let asked = realm.requests.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(
        asked[0].1,
        format!("Basic {}", base64(b"alice:s3cret", false))
    );
}

#[tokio::test]
async fn a_loopback_registry_may_use_a_loopback_http_realm() {
    let realm =
        Server::start(|_, _| Reply::ok("application/json", br#"{"token":"tok"}"#.to_vec())).await;
    let registry = Server::start(bearer_registry(format!(
        "http://127.0.0.1:{}/token",
        realm.port
    )))
    .await;
    let c = tempfile::tempdir().unwrap();
    let e = resolve(
        &puller(c.path(), opts(), CredentialStore::default()),
        registry.port,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert_eq!(realm.paths().len(), 1);
}
