//! Registry credentials from Docker's `config.json`: inline `auths`, a global
//! `credsStore`, and per-registry `credHelpers` (`docker-credential-<name> get`).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What to present to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// OAuth2 refresh token (`identitytoken`, or helper username `<token>`).
    IdentityToken(String),
    /// Bearer token used as-is (`registrytoken`).
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

/// Parsed Docker config plus the directory where `docker-credential-*` helpers are looked
/// up (`$PATH` when `None`).
#[derive(Debug, Default)]
pub struct CredentialStore {
    config: ConfigFile,
    helper_dir: Option<PathBuf>,
    /// The file `config` came from, re-read on every lookup: a long-running daemon must see
    /// a `docker login` made after it started.
    source: Option<PathBuf>,
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000/path` → `host:5000`.
fn key_host(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn is_hub(h: &str) -> bool {
    matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim().bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

pub(crate) fn encode_base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, x)| a | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

impl CredentialStore {
    /// Loads `path`, or `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`. A
    /// missing file means no credentials; a malformed one is an error.
    pub fn load(path: Option<&Path>) -> Result<CredentialStore> {
        let path = Self::config_path(path);
        let Some(path) = path else {
            return Ok(CredentialStore::default());
        };
        Ok(CredentialStore {
            config: Self::read_config(&path)?,
            helper_dir: None,
            source: Some(path),
        })
    }

    /// `path`, or `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json`.
    fn config_path(path: Option<&Path>) -> Option<PathBuf> {
        Some(match path {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("DOCKER_CONFIG") {
                Some(d) => PathBuf::from(d).join("config.json"),
                None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
            },
        })
    }

    /// A missing file means no credentials; a malformed one is an error.
    fn read_config(path: &Path) -> Result<ConfigFile> {
        let body = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&body)
            .map_err(|e| Error::Credentials(format!("{}: {e}", path.display())))
    }

    /// Looks helpers up in `dir` instead of `$PATH` (tests).
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> CredentialStore {
        self.helper_dir = Some(dir.into());
        self
    }

    /// Credentials for a registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        match &self.source {
            Some(path) => self.lookup(&Self::read_config(path)?, registry),
            None => self.lookup(&self.config, registry),
        }
    }

    fn lookup(&self, config: &ConfigFile, registry: &str) -> Result<Option<Credential>> {
        let hub = is_hub(registry);
        let matches = |k: &str| {
            let h = key_host(k);
            h == registry || (hub && is_hub(h))
        };
        let helper = self
            .config
            .cred_helpers
            .iter()
            .find(|(k, _)| matches(k))
            .map(|(_, v)| v.clone())
            .or_else(|| config.creds_store.clone());
        if let Some(helper) = helper.filter(|h| !h.is_empty()) {
            let server = if hub {
                "https://index.docker.io/v1/".to_string()
            } else {
                registry.to_string()
            };
            if let Some(c) = self.run_helper(&helper, &server)? {
                return Ok(Some(c));
            }
        }
        let Some((_, e)) = config.auths.iter().find(|(k, _)| matches(k)) else {
            return Ok(None);
        };
        if let Some(t) = e.registrytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::Bearer(t.clone())));
        }
        if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(t.clone())));
        }
        if let Some(a) = e.auth.as_ref().filter(|a| !a.is_empty()) {
            let raw = decode_base64(a).ok_or_else(|| {
                Error::Credentials(format!("auth for {registry} is not valid base64"))
            })?;
            let s = String::from_utf8(raw)
                .map_err(|_| Error::Credentials(format!("auth for {registry} is not UTF-8")))?;
            let (u, p) = s.split_once(':').ok_or_else(|| {
                Error::Credentials(format!("auth for {registry} is not user:password"))
            })?;
            return Ok(Some(Credential::Basic {
                username: u.into(),
                password: p.into(),
            }));
        }
        match (&e.username, &e.password) {
            (Some(u), Some(p)) => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }

    fn run_helper(&self, name: &str, server: &str) -> Result<Option<Credential>> {
        let exe = format!("docker-credential-{name}");
        let exe = match &self.helper_dir {
            Some(d) => d.join(exe),
            None => PathBuf::from(exe),
        };
        let mut child = Command::new(&exe)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Credentials(format!(
                    "cannot run credential helper {}: {e}",
                    exe.display()
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Credentials(format!("credential helper {}: {e}", exe.display())))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if msg.to_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(Error::Credentials(format!(
                "credential helper {} failed: {}",
                exe.display(),
                msg.trim()
            )));
        }
        #[derive(Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let h: HelperOut = serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::Credentials(format!("credential helper {} output: {e}", exe.display()))
        })?;
        Ok(Some(if h.username == "<token>" {
            Credential::IdentityToken(h.secret)
        } else {
            Credential::Basic {
                username: h.username,
                password: h.secret,
            }
        }))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_login_after_load_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let store = CredentialStore::load(Some(&path)).expect("no file yet");
        assert!(store.get("127.0.0.1:5000").expect("get").is_none());
        // `docker login` writes the file later, while the daemon keeps its store.
        std::fs::write(&path, br#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}"#).expect("write");
        match store.get("127.0.0.1:5000").expect("get") {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.as_str()), ("u", "p"));
            }
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    use super::*;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:p@ss:word"] {
            assert_eq!(
                decode_base64(&encode_base64(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(encode_base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn auths_helpers_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\ncase \"$server\" in\n  helped.io) echo '{\"ServerURL\":\"helped.io\",\"Username\":\"hu\",\"Secret\":\"hs\"}';;\n  tok.io) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"username":"u","password":"p"},"reg.io":{"registrytoken":"rt"}},
                "credHelpers":{"helped.io":"fake","tok.io":"fake","missing.io":"fake"}}"#,
        )
        .unwrap();
        let s = CredentialStore::load(Some(&cfg))
            .unwrap()
            .with_helper_dir(dir.path());
        assert_eq!(
            s.get("docker.io").unwrap(),
            Some(Credential::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert_eq!(
            s.get("127.0.0.1:5000").unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            s.get("reg.io").unwrap(),
            Some(Credential::Bearer("rt".into()))
        );
        assert_eq!(
            s.get("helped.io").unwrap(),
            Some(Credential::Basic {
                username: "hu".into(),
                password: "hs".into()
            })
        );
        assert_eq!(
            s.get("tok.io").unwrap(),
            Some(Credential::IdentityToken("refresh".into()))
        );
        assert_eq!(s.get("missing.io").unwrap(), None);
        assert_eq!(s.get("other.io").unwrap(), None);
        assert!(
            CredentialStore::load(Some(&dir.path().join("nope.json")))
                .unwrap()
                .get("x")
                .unwrap()
                .is_none()
        );
        std::fs::write(&cfg, r#"{"credsStore":"absent"}"#).unwrap();
        let s = CredentialStore::load(Some(&cfg))
            .unwrap()
            .with_helper_dir(dir.path());
        assert!(
            s.get("x.io")
                .unwrap_err()
                .to_string()
                .contains("docker-credential-absent")
        );
    }
}
