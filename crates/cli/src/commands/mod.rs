//! One module per command group; each turns parsed args into RPCs and output.

pub mod config;
pub mod daemon;
pub mod daemon_service;
pub mod doctor;
pub mod image;
pub mod kernel;
pub mod mcp;
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

pub use banger_client::{absolute, local_source_absolute};

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
