//! `ping`, `version`, `daemon.shutdown`, `upload`, `upload.delete`.

use banger_api::methods::system::{Ping, Shutdown, Upload, UploadDelete, Version};
use banger_api::system::{PingResult, ShutdownResult, VersionInfo};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.upgrade::<Upload, _, _>(|s, p| async move { crate::uploads::open(&s.layout.state_dir, p) });
    t.blocking::<UploadDelete, _>(|s, p, _| crate::uploads::delete(&s.layout.state_dir, p));
    t.call::<Ping, _, _>(|state, _, _| async move {
        Ok(PingResult {
            ok: true,
            pid: std::process::id(),
            uptime_seconds: state.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: banger_api::API_VERSION,
        })
    });
    t.call::<Version, _, _>(|state, _, _| async move {
        Ok(VersionInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: banger_api::API_VERSION,
            pid: std::process::id(),
            state_dir: state.layout.state_dir.display().to_string(),
            cache_dir: state.layout.cache_dir.display().to_string(),
            socket_path: state.layout.socket_path().display().to_string(),
            started_by: crate::origin::started_by(),
        })
    });
    t.call::<Shutdown, _, _>(|state, _, _| async move {
        tracing::info!("shutdown requested over the API");
        state.shutdown.notify_one();
        Ok(ShutdownResult { stopping: true })
    });
}
