//! One module per command group; each turns parsed args into RPCs and output.

pub mod config;
pub mod daemon;
pub mod daemon_service;
pub mod dial_stdio;
pub mod doctor;
pub mod image;
pub mod kernel;
pub mod mcp;
pub mod serve;
pub mod snapshot;
pub mod ssh_config;
pub mod version;
pub mod vm;

use banger_api::methods::Streaming;

use crate::progress::PullProgress;
use banger_client::Client;

/// Calls a long-running method with its progress on stderr (none when `quiet`). Ctrl-C
/// drops the call, closing the connection: the daemon cancels the operation and cleans
/// up, and the error says `undone`.
pub async fn with_progress<M: Streaming>(
    client: &Client,
    params: &M::Params,
    quiet: bool,
    undone: &str,
) -> anyhow::Result<M::Result> {
    let mut progress = PullProgress::new(quiet);
    let call = client.call_streaming::<M>(params, |event| {
        if let Some(p) = progress.as_mut() {
            p.on_event(event);
        }
    });
    let result = tokio::select! {
        r = call => r,
        _ = tokio::signal::ctrl_c() => {
            if let Some(p) = progress.as_mut() { p.finish(); }
            anyhow::bail!("cancelled; {undone}");
        }
    };
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    Ok(result?)
}

/// The remote host (`--host`) whose daemon reads the paths in arguments, set once by
/// `main` before any command runs.
static DAEMON_HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records that the daemon runs on `host`: paths in arguments then name that host's files.
pub fn set_daemon_host(host: &str) {
    let _ = DAEMON_HOST.set(host.to_string());
}

/// A path the daemon reads: made absolute against this directory, or, with `--host`, a
/// path on that host, which must then be absolute (this machine's working directory means
/// nothing there).
pub fn absolute(path: &std::path::Path) -> anyhow::Result<String> {
    match DAEMON_HOST.get() {
        None => Ok(banger_client::absolute(path)?),
        Some(host) => remote_path(host, path),
    }
}

/// `oci:`, `oci-archive:` and `docker-archive:` references: their paths as [`absolute`]
/// makes them.
pub fn local_source_absolute(reference: &str) -> anyhow::Result<String> {
    match DAEMON_HOST.get() {
        None => Ok(banger_client::local_source_absolute(reference)?),
        Some(host) => {
            for prefix in ["oci:", "oci-archive:", "docker-archive:"] {
                if let Some(rest) = reference.strip_prefix(prefix) {
                    remote_path(host, std::path::Path::new(rest))?;
                }
            }
            Ok(reference.to_string())
        }
    }
}

fn remote_path(host: &str, path: &std::path::Path) -> anyhow::Result<String> {
    if !path.is_absolute() {
        anyhow::bail!(
            "{}: with --host the daemon on {host} reads this path on that host, so it must be \
             absolute there (copy a local file over first, e.g. with scp)",
            path.display()
        );
    }
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("path {} is not valid UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_sources_become_absolute_and_keep_their_suffix() {
        let cwd = std::env::current_dir().expect("cwd");
        let here = |p: &str| cwd.join(p).to_string_lossy().into_owned();
        for (typed, want) in [
            ("oci:layout", format!("oci:{}", here("layout"))),
            ("oci:layout:v1", format!("oci:{}:v1", here("layout"))),
            (
                "oci-archive:x.tar:v1",
                format!("oci-archive:{}:v1", here("x.tar")),
            ),
            (
                "docker-archive:/abs/s.tar",
                "docker-archive:/abs/s.tar".to_string(),
            ),
            (
                "docker-archive:s.tar:localhost:5000/app:v1",
                format!("docker-archive:{}:localhost:5000/app:v1", here("s.tar")),
            ),
            (
                "docker-archive:s.tar:@1",
                format!("docker-archive:{}:@1", here("s.tar")),
            ),
            ("debian:bookworm", "debian:bookworm".to_string()),
        ] {
            assert_eq!(local_source_absolute(typed).expect(typed), want, "{typed}");
        }
    }
}
