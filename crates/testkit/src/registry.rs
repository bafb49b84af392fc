//! A real OCI registry (Debian's `docker-registry`, i.e. distribution v2) on loopback.
//!
//! Each [`Registry`] owns a tempdir holding its config, storage and log. It can be
//! stopped and restarted on the same port and storage, so tests can kill it mid-pull.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token_auth::{self, TokenServer};
use crate::tools;

/// How long a fresh registry gets to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports tried when the one we picked was taken between probe and bind.
const PORT_ATTEMPTS: usize = 5;

pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// The token issuer of a registry started with [`Registry::start_with_token_auth`].
    token: Option<TokenServer>,
}

/// User of a registry started with [`Registry::start_with_basic_auth`].
pub const AUTH_USER: &str = "banger";
/// Its password.
pub const AUTH_PASSWORD: &str = "s3cret-pass";
/// `htpasswd -Bbn banger s3cret-pass` (bcrypt, the only scheme the registry accepts),
/// precomputed so tests need no extra tool.
const AUTH_HTPASSWD: &str = "banger:$2y$05$iVbYhyKykoe.B3DSPz5Ds.vW4dlMV/lm/hIIhtrDeDn/0F1YHX1ta\n";
/// The `auth:` section of an instance's config, when it requires auth.
const AUTH_CONFIG_NAME: &str = "auth.yml";

impl Registry {
    /// Starts a registry on `127.0.0.1:<free port>` and waits until it answers.
    pub fn start() -> Registry {
        Self::start_in(Self::new_dir(), None)
    }

    /// Like [`Registry::start`], but every request needs HTTP basic auth as
    /// [`AUTH_USER`]/[`AUTH_PASSWORD`] (the registry's `htpasswd` auth).
    pub fn start_with_basic_auth() -> Registry {
        let dir = Self::new_dir();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, AUTH_HTPASSWD).expect("write htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: banger-test\n    path: {}\n",
            htpasswd.display()
        );
        std::fs::write(dir.path().join(AUTH_CONFIG_NAME), auth).expect("write auth config");
        Self::start_in(dir, None)
    }

    /// Like [`Registry::start`], but with bearer-token auth as hosted registries do it: a
    /// [`TokenServer`] issues signed tokens to [`AUTH_USER`]/[`AUTH_PASSWORD`] only.
    pub fn start_with_token_auth() -> Registry {
        let dir = Self::new_dir();
        let token = TokenServer::start(dir.path());
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token.realm(),
            token_auth::SERVICE,
            token_auth::ISSUER,
            token.cert().display()
        );
        std::fs::write(dir.path().join(AUTH_CONFIG_NAME), auth).expect("write auth config");
        Self::start_in(dir, Some(token))
    }

    /// A Docker `config.json` holding [`AUTH_USER`]'s credentials for this registry, as
    /// `docker login` writes it.
    pub fn docker_config_json(&self) -> String {
        let auth = token_auth::base64(format!("{AUTH_USER}:{AUTH_PASSWORD}").as_bytes(), false);
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, self.host())
    }

    /// The token issuer, for a registry with token auth.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    fn new_dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("banger-registry-")
            .tempdir()
            .expect("create registry tempdir");
        std::fs::create_dir_all(dir.path().join("storage")).expect("create registry storage");
        dir
    }

    fn start_in(dir: tempfile::TempDir, token: Option<TokenServer>) -> Registry {
        let mut last_err = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match spawn_ready(dir.path(), port) {
                Ok(child) => {
                    return Registry {
                        dir,
                        port,
                        child: Some(child),
                        token,
                    };
                }
                Err(e) => last_err = e,
            }
        }
        panic!("docker-registry did not start after {PORT_ATTEMPTS} ports: {last_err}");
    }

    /// `127.0.0.1:PORT`, as used in `docker://HOST/repo:tag` references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The registry's filesystem storage root (survives stop/restart).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far (all runs of this instance).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the registry (SIGKILL, like a crash) and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped registry again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; allow a short grace period for the kernel to
        // release it before giving up.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot restart docker-registry on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// `skopeo copy [extra_args] SRC docker://HOST/REPO_TAG` over plain HTTP.
    /// `src` is any skopeo transport reference, e.g. `oci:/path/layout:tag`.
    pub fn push(&self, src: &str, repo_tag: &str, extra_args: &[&str]) {
        let dest = format!("docker://{}/{}", self.host(), repo_tag);
        tools::run(
            tools::command("skopeo")
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .args(extra_args)
                .arg(src)
                .arg(&dest),
        );
    }

    /// A minimal HTTP/1.1 GET against the registry: (status, headers, body).
    /// Enough for readiness probes and simple assertions without extra deps.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
        http_get(self.port, path)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_NAME)
    }

    fn try_start(&mut self) -> Result<(), String> {
        self.child = Some(spawn_ready(self.dir.path(), self.port)?);
        Ok(())
    }
}

const LOG_NAME: &str = "registry.log";

/// Spawns `docker-registry serve` for the instance in `dir` and waits for `GET /v2/`.
fn spawn_ready(dir: &Path, port: u16) -> Result<Child, String> {
    let config = dir.join("config.yml");
    let log_path = dir.join(LOG_NAME);
    let auth = std::fs::read_to_string(dir.join(AUTH_CONFIG_NAME)).ok();
    write_config(&config, &dir.join("storage"), port, auth.as_deref())
        .map_err(|e| format!("write {}: {e}", config.display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open registry log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_tail = || {
        let all = std::fs::read(&log_path).unwrap_or_default();
        let start = usize::try_from(log_start).unwrap_or(0).min(all.len());
        tools::tail(&String::from_utf8_lossy(&all[start..]), 20)
    };
    let mut cmd = Command::new(tools::require("docker-registry"));
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn `{}`: {e}", tools::command_line(&cmd)))?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "docker-registry exited early ({status}); log tail:\n{}",
                log_tail()
            ));
        }
        // 401 is an answer too (a registry that requires auth).
        if let Ok((200 | 401, _, _)) = http_get(port, "/v2/") {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "docker-registry not answering GET /v2/ on port {port} after {READY_TIMEOUT:?}; \
                 log tail:\n{}",
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(path: &Path, storage: &Path, port: u16, auth: Option<&str>) -> std::io::Result<()> {
    // No TLS, no periodic health checks: plain HTTP on loopback only; auth on request.
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        storage.display()
    );
    if let Some(auth) = auth {
        yaml.push_str(auth);
    }
    let mut f = File::create(path)?;
    f.write_all(yaml.as_bytes())
}

/// A port that was free a moment ago (bind to 0 and let the kernel choose).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: \
         application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header terminator"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    // `Connection: close` and no chunked encoding from distribution for small bodies is
    // not guaranteed; callers needing exact bodies of big blobs should use curl.
    Ok((status, head, raw[split + 4..].to_vec()))
}
