//! Where an image comes from: a registry reference, or a local `oci:` layout,
//! `oci-archive:` tarball, or `docker-archive:` tarball (`docker save` output).

use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::tarentry::normalize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Registry(Reference),
    /// `oci:DIR[:TAG]`
    OciDir {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    /// `docker-archive:FILE[:NAME:TAG|:@INDEX]` (skopeo's syntax: the part after the
    /// first `:` picks one image of a multi-image `docker save`)
    DockerArchive {
        file: PathBuf,
        image: Option<ArchiveImage>,
    },
}

/// Which image of a `docker save` archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveImage {
    /// One of its `RepoTags` (`debian:bookworm`).
    Tag(String),
    /// Its position in `manifest.json`, from 0.
    Index(usize),
}

impl std::fmt::Display for ArchiveImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveImage::Tag(t) => f.write_str(t),
            ArchiveImage::Index(i) => write!(f, "@{i}"),
        }
    }
}

/// Splits `PATH[:TAG]`; a suffix counts as a tag only if it has no `/`.
fn path_and_tag(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((p, t)) if !t.is_empty() && !t.contains('/') && !p.is_empty() => {
            (PathBuf::from(p), Some(t.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

impl Source {
    /// `oci:…`, `oci-archive:…`, `docker-archive:…`, `docker://REF`, or a bare reference.
    pub fn parse(s: &str) -> Result<Source> {
        let empty = |kind: &str| Error::Source(s.to_string(), format!("{kind} needs a path"));
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = path_and_tag(rest);
            if dir.as_os_str().is_empty() {
                return Err(empty("oci:"));
            }
            return Ok(Source::OciDir { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = path_and_tag(rest);
            if file.as_os_str().is_empty() {
                return Err(empty("oci-archive:"));
            }
            return Ok(Source::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(empty("docker-archive:"));
            }
            let (file, image) = match rest.split_once(':') {
                None => (rest, None),
                Some((file, "")) => (file, None),
                Some((file, sel)) => {
                    let image = match sel.strip_prefix('@') {
                        Some(n) => ArchiveImage::Index(n.parse().map_err(|_| {
                            Error::Source(
                                s.to_string(),
                                format!("{sel:?} is not an image index (write @0, @1, …)"),
                            )
                        })?),
                        None => ArchiveImage::Tag(sel.to_string()),
                    };
                    (file, Some(image))
                }
            };
            if file.is_empty() {
                return Err(empty("docker-archive:"));
            }
            return Ok(Source::DockerArchive {
                file: PathBuf::from(file),
                image,
            });
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        Ok(Source::Registry(Reference::parse(r)?))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            Source::Registry(r) => write!(f, "{r}"),
            Source::OciDir { dir, tag: t } => write!(f, "oci:{}{}", dir.display(), tag(t)),
            Source::OciArchive { file, tag: t } => {
                write!(f, "oci-archive:{}{}", file.display(), tag(t))
            }
            Source::DockerArchive { file, image } => {
                write!(f, "docker-archive:{}", file.display())?;
                match image {
                    Some(image) => write!(f, ":{image}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Unpacks an image archive (regular files, directories, and symlinks between members)
/// into `dest`. Paths are confined like layer paths; symlinks are resolved lexically to
/// another member and hard-linked, never created.
pub(crate) fn extract_archive(file: &Path, dest: &Path) -> Result<()> {
    let f =
        std::fs::File::open(file).map_err(|e| Error::io(format!("open {}", file.display()), e))?;
    let bad = |m: String| Error::Source(file.display().to_string(), m);
    let mut reader = std::io::BufReader::new(f);
    use std::io::{BufRead, Read};
    let compressed = crate::decode::sniff(
        reader
            .fill_buf()
            .map_err(|e| Error::io("read archive", e))?,
    ) != crate::decode::Compression::None;
    let input: Box<dyn Read> = if compressed {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut ar = tar::Archive::new(crate::tar_guard::TarGuard::new(
        input,
        crate::tar_guard::DEFAULT_MAX_EXTENSION,
    ));
    let mut links = Vec::new();
    for e in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut e = e.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let p = normalize(&e.path_bytes()).map_err(|m| {
            bad(format!(
                "{m}: {:?}",
                String::from_utf8_lossy(&e.path_bytes())
            ))
        })?;
        if p.is_empty() {
            continue;
        }
        let out = dest.join(&p);
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&out).map_err(|x| Error::io("extract", x))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = out.parent() {
                    std::fs::create_dir_all(parent).map_err(|x| Error::io("extract", x))?;
                }
                let mut w = std::fs::File::create(&out)
                    .map_err(|x| Error::io(format!("create {}", out.display()), x))?;
                std::io::copy(&mut e, &mut w)
                    .map_err(|x| Error::io("extract archive member", x))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let t = String::from_utf8(target).map_err(|_| bad("non-UTF-8 link".into()))?;
                let joined = if e.header().entry_type() == tar::EntryType::Symlink {
                    let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
                    resolve_lexically(parent, &t)
                        .ok_or_else(|| bad(format!("link {p} escapes the archive")))?
                } else {
                    normalize(t.as_bytes()).map_err(|m| bad(format!("link {p}: {m}")))?
                };
                links.push((out, dest.join(joined)));
            }
            _ => {}
        }
    }
    for (link, target) in links {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|x| Error::io("extract", x))?;
        }
        std::fs::hard_link(&target, &link).map_err(|x| {
            Error::io(
                format!("link {} to {}", link.display(), target.display()),
                x,
            )
        })?;
    }
    Ok(())
}

/// `dir` + relative or absolute `target`, with `..` applied, staying inside the root.
fn resolve_lexically(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|s| !s.is_empty()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            Source::parse("oci:/tmp/l:v1").unwrap(),
            Source::OciDir {
                dir: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci:/tmp/l").unwrap(),
            Source::OciDir {
                dir: "/tmp/l".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("oci-archive:/x/a.tar").unwrap(),
            Source::OciArchive {
                file: "/x/a.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/x/a.tar").unwrap(),
            Source::DockerArchive {
                file: "/x/a.tar".into(),
                image: None
            }
        );
        for (text, image) in [
            (
                "docker-archive:/x/a.tar:debian:bookworm",
                ArchiveImage::Tag("debian:bookworm".into()),
            ),
            (
                "docker-archive:/x/a.tar:localhost:5000/app:v1",
                ArchiveImage::Tag("localhost:5000/app:v1".into()),
            ),
            ("docker-archive:/x/a.tar:@1", ArchiveImage::Index(1)),
        ] {
            let parsed = Source::parse(text).unwrap();
            assert_eq!(
                parsed,
                Source::DockerArchive {
                    file: "/x/a.tar".into(),
                    image: Some(image)
                }
            );
            assert_eq!(parsed.to_string(), text, "round trip");
        }
        assert!(Source::parse("docker-archive:/x/a.tar:@one").is_err());
        assert!(Source::parse("docker-archive::debian").is_err());
        assert!(matches!(
            Source::parse("debian").unwrap(),
            Source::Registry(_)
        ));
        assert!(matches!(
            Source::parse("docker://127.0.0.1:5000/x:y").unwrap(),
            Source::Registry(_)
        ));
        assert!(Source::parse("oci:").is_err());
        assert!(Source::parse("Bad").is_err());
        assert_eq!(
            resolve_lexically("a/b", "../c/layer.tar").as_deref(),
            Some("a/c/layer.tar")
        );
        assert_eq!(resolve_lexically("a", "../../x"), None);
    }
}
