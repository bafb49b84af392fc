//! Image references with Docker's normalisation rules, and the default image name the
//! CLI derives from a reference when `--name` is omitted.
//!
//! Grammar (Docker distribution's): `[domain/]path[:tag][@digest]`. The first path
//! component is a domain when it contains `.` or `:` or is `localhost`; otherwise the
//! domain is `docker.io`, and single-component names on `docker.io` get `library/`.

use crate::digest::Digest;
use std::fmt;

/// Default registry for names without a domain.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path within the registry (`library/debian`).
    pub repository: String,
    /// Tag as written; `None` when absent (then `latest` is implied unless a digest pins it).
    pub tag: Option<String>,
    /// Digest pin, when given.
    pub digest: Option<Digest>,
}

/// Why a reference string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    /// Parses and normalises `s` (`debian` → `docker.io/library/debian`, tag `latest` implied).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String| ReferenceError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("reference is empty".into()));
        }
        if s.len() > 4096 {
            return Err(err("reference is too long".into()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(err)?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/', so `host:5000/repo` has none.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(err)?;
        }
        if name.is_empty() {
            return Err(err("repository name is empty".into()));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder)) if first.contains(['.', ':']) || first == "localhost" => {
                validate_domain(first).map_err(err)?;
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(format!("repository name {path:?} must be lower-case")));
        }
        for component in path.split('/') {
            validate_component(component).map_err(err)?;
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(err("repository name is longer than 255 characters".into()));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// What to ask the registry for: the digest if pinned, else the tag (default `latest`).
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// Tag, or `latest` when neither tag nor digest was given.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for Reference {
    /// Fully-qualified form: `docker.io/library/debian:latest`, `host/repo@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = self.tag_or_latest() {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::parse(s)
    }
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {t:?} (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
        ))
    }
}

fn validate_domain(d: &str) -> Result<(), String> {
    let bad = || format!("invalid registry host {d:?}");
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // IPv6 literal: [addr]:port
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        (
            None,
            if after.is_empty() {
                None
            } else {
                Some(after.strip_prefix(':').ok_or_else(bad)?)
            },
        )
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(h) = host {
        for label in h.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(c: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "invalid repository path component {c:?} (lower-case letters, digits, and single '.', '_', '__' or '-' runs between them)"
        )
    };
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_lowercase() || b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// The name `banger image pull` uses when `--name` is omitted: the last path segment,
/// then `-` and the tag if one was written, with `.` and `:` turned into `-`, lower-cased
/// (tags may contain upper case but image names may not).
///
/// Digest-only references (`debian@sha256:abcd…`) get the first 12 hex digits of the
/// digest as suffix (`debian-abcd…`), so two pins of one repository don't collide.
/// With both a tag and a digest the tag is used.
pub fn default_image_name(r: &Reference) -> String {
    let digest = r.digest.as_ref().map(Digest::hex);
    name_from(&r.repository, r.tag.as_deref(), digest)
}

/// [`default_image_name`] of a reference as written, without validating it: the CLI
/// derives the name its config defaults to from a string it does not parse (a local
/// source such as `oci:DIR:TAG` is named after its last path segment and tag).
pub fn default_image_name_of(written: &str) -> String {
    let (rest, digest) = match written.split_once('@') {
        Some((r, d)) => (r, Some(d.split_once(':').map_or(d, |(_, hex)| hex))),
        None => (written, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(i) => name_from(
            &rest[..last_slash + i],
            Some(&rest[last_slash + i + 1..]),
            digest,
        ),
        None => name_from(rest, None, digest),
    }
}

fn name_from(path: &str, tag: Option<&str>, digest_hex: Option<&str>) -> String {
    let mut name = path.rsplit('/').next().unwrap_or(path).to_string();
    if let Some(tag) = tag {
        name.push('-');
        name.push_str(tag);
    } else if let Some(hex) = digest_hex {
        name.push('-');
        name.push_str(hex.get(..12).unwrap_or(hex));
    }
    name.chars()
        .map(|c| {
            if c == '.' || c == ':' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("debian"), "docker.io/library/debian:latest");
        assert_eq!(full("debian:bookworm"), "docker.io/library/debian:bookworm");
        assert_eq!(full("library/debian"), "docker.io/library/debian:latest");
        assert_eq!(
            full("index.docker.io/library/debian"),
            "docker.io/library/debian:latest"
        );
        assert_eq!(full("someone/tool:1"), "docker.io/someone/tool:1");
        assert_eq!(full("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            full("ghcr.io/some/org/my-image:v2.1"),
            "ghcr.io/some/org/my-image:v2.1"
        );
        assert_eq!(
            full(&format!("debian@{D}")),
            format!("docker.io/library/debian@{D}")
        );
        assert_eq!(
            full(&format!("debian:12@{D}")),
            format!("docker.io/library/debian:12@{D}")
        );
        assert_eq!(full("[::1]:5000/x:t"), "[::1]:5000/x:t");
        let r = Reference::parse("host:5000/repo").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("host:5000", "repo", None)
        );
        assert_eq!(r.manifest_reference(), "latest");
        let r = Reference::parse(&format!("a:t@{D}")).unwrap();
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(full("a__b-c--d/e.f_g"), "docker.io/a__b-c--d/e.f_g:latest");
    }

    #[test]
    fn rejects_invalid_with_precise_reason() {
        let reason = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert!(reason("").contains("empty"));
        assert!(reason("Debian").contains("lower-case"));
        assert!(reason("docker.io/Library/debian").contains("lower-case"));
        assert!(reason("debian@sha256:abc").contains("64 lower-case hex"));
        assert!(reason("debian@md5:abc").contains("unsupported digest algorithm"));
        assert!(reason("debian:").contains("invalid tag"));
        assert!(reason("debian:-x").contains("invalid tag"));
        assert!(reason("a//b").contains("component"));
        assert!(reason("a/b_").contains("component"));
        assert!(reason("a/.b").contains("component"));
        assert!(reason("a...b").contains("component"));
        assert!(reason("host:port/x").contains("registry host"));
        assert!(reason(":tag").contains("empty"));
        assert!(reason("bad host.io/x").contains("registry host"));
        assert!(reason(&format!("a/{}", "b".repeat(300))).contains("255"));
    }

    #[test]
    fn default_names_follow_the_seed() {
        let name = |s: &str| default_image_name(&Reference::parse(s).unwrap());
        assert_eq!(name("docker.io/library/debian:bookworm"), "debian-bookworm");
        assert_eq!(name("alpine:3.20"), "alpine-3-20");
        assert_eq!(name("docker.io/library/debian"), "debian");
        assert_eq!(name("ghcr.io/some/org/my-image:v2.1"), "my-image-v2-1");
        assert_eq!(name("localhost:5000/x:Latest"), "x-latest");
        assert_eq!(name(&format!("debian@{D}")), "debian-e3b0c44298fc");
        assert_eq!(name(&format!("debian:12@{D}")), "debian-12");
    }

    #[test]
    fn names_as_written_follow_the_same_rule() {
        for s in [
            "docker.io/library/debian:bookworm",
            "alpine:3.20",
            "debian",
            "ghcr.io/some/org/my-image:v2.1",
            "localhost:5000/x:Latest",
            &format!("debian@{D}"),
            &format!("debian:12@{D}"),
        ] {
            let parsed = default_image_name(&Reference::parse(s).unwrap());
            assert_eq!(default_image_name_of(s), parsed, "{s}");
        }
        // Unparsed: local sources and short digests still get a name.
        assert_eq!(default_image_name_of("oci:/srv/layout:v1"), "layout-v1");
        assert_eq!(
            default_image_name_of("debian:12@sha256:e3b0c4"),
            "debian-12"
        );
        assert_eq!(default_image_name_of("debian@sha256:e3b0"), "debian-e3b0");
    }
}
