//! A token server for `docker-registry`'s bearer-token auth, the scheme Docker Hub, GHCR
//! and most hosted registries use: the registry answers 401 with a `Bearer realm=…`
//! challenge, the client fetches a JWT from the realm (with basic credentials), and the
//! registry checks the JWT's signature against a certificate it trusts.
//!
//! Tokens are RS256 JWTs signed by `openssl` with a key made per server; the header's
//! `kid` is the libtrust fingerprint of that key, which is how distribution finds it among
//! the keys of its `rootcertbundle`. Only [`AUTH_USER`]/[`AUTH_PASSWORD`] get a token.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::registry::{AUTH_PASSWORD, AUTH_USER};
use crate::tools;

/// The `service` the registry expects in a token's audience.
pub const SERVICE: &str = "banger-test-registry";
/// The token issuer the registry trusts.
pub const ISSUER: &str = "banger-test-token-issuer";

pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
}

struct Signer {
    key: PathBuf,
    kid: String,
    scratch: PathBuf,
}

impl TokenServer {
    /// Makes a key and certificate in `dir` and serves `GET /token` on a free port.
    pub fn start(dir: &Path) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        tools::run(
            tools::command("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=banger-test-token-issuer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let spki = tools::run(
            tools::command("openssl")
                .args(["pkey", "-pubout", "-outform", "DER", "-in"])
                .arg(&key),
        )
        .stdout;
        let signer = Arc::new(Signer {
            key,
            kid: libtrust_key_id(&spki),
            scratch: dir.join("token-signing"),
        });
        std::fs::create_dir_all(&signer.scratch).expect("mkdir token scratch");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind token server");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stopping, log) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (signer, log) = (signer.clone(), log.clone());
                std::thread::spawn(move || serve(conn, &signer, &log));
            }
        });
        TokenServer {
            port,
            cert,
            stop,
            requests,
        }
    }

    /// The realm URL for the registry's challenge.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts (`rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// Request lines seen so far, with `granted` or `refused`.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn serve(conn: TcpStream, signer: &Signer, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("authorization")
                {
                    authorization = v.trim().to_string();
                }
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let expected = format!(
        "Basic {}",
        base64(format!("{AUTH_USER}:{AUTH_PASSWORD}").as_bytes(), false)
    );
    let (status, body) = if authorization == expected {
        let token = signer.token(&scopes);
        (
            "200 OK",
            format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":600}}"#),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
        )
    };
    log.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
        "{} {}",
        request_line.trim(),
        if status.starts_with("200") {
            "granted"
        } else {
            "refused"
        }
    ));
    let mut out = conn;
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Signer {
    /// A JWT granting the requested repository scopes (`repository:NAME:ACTIONS`).
    fn token(&self, scopes: &[String]) -> String {
        let access: Vec<String> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
                Some(format!(
                    r#"{{"type":"{kind}","name":"{name}","actions":[{}]}}"#,
                    actions.join(",")
                ))
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = format!(r#"{{"typ":"JWT","alg":"RS256","kid":"{}"}}"#, self.kid);
        let claims = format!(
            r#"{{"iss":"{ISSUER}","sub":"{AUTH_USER}","aud":"{SERVICE}","exp":{},"nbf":{},"iat":{},"jti":"{now}-{}","access":[{}]}}"#,
            now + 600,
            now - 60,
            now - 60,
            std::process::id(),
            access.join(",")
        );
        let signing_input = format!(
            "{}.{}",
            base64(header.as_bytes(), true),
            base64(claims.as_bytes(), true)
        );
        let input = tempfile::NamedTempFile::new_in(&self.scratch).expect("temp file");
        std::fs::write(input.path(), &signing_input).expect("write signing input");
        let signature = tools::run(
            tools::command("openssl")
                .args(["dgst", "-sha256", "-binary", "-sign"])
                .arg(&self.key)
                .arg(input.path()),
        )
        .stdout;
        format!("{signing_input}.{}", base64(&signature, true))
    }
}

/// libtrust's key id: the first 240 bits of sha256(SPKI DER), base32, in groups of four.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(spki_der);
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut chars = String::new();
    for byte in &digest[..30] {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            chars.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    chars
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Standard base64, or URL-safe without padding (JWT) when `url`.
pub fn base64(data: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"banger:s3cret", false), "YmFuZ2VyOnMzY3JldA==");
        assert_eq!(base64(b"\xfb\xff", true), "-_8");
        assert_eq!(
            percent_decode("repository%3At%2Fapp%3Apull%2Cpush"),
            "repository:t/app:pull,push"
        );
        let id = libtrust_key_id(b"x");
        assert_eq!(id.len(), 48 + 11);
        assert_eq!(id.split(':').count(), 12);
    }
}
