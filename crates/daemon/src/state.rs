//! What every request handler shares.

use std::sync::Arc;
use std::time::Instant;

use banger_api::layout::Layout;
use tokio::sync::Notify;

use crate::images::Images;
use crate::kernels::Kernels;
use crate::kernels::content_store::SharedFiles;
use crate::oci_client::OciClient;
use crate::pull::{ImagePuller, PullBackend};
use crate::store::Store;
use crate::vms::Vms;

pub struct DaemonState {
    pub layout: Layout,
    pub store: Arc<Store>,
    pub images: Images,
    pub puller: ImagePuller,
    pub kernels: Kernels,
    pub vms: Arc<Vms>,
    pub started: Instant,
    /// Notified once to stop accepting and drain connections.
    pub shutdown: Notify,
}

impl DaemonState {
    /// `oci` is the daemon's one OCI client: kernels use it directly, images through
    /// `backend` (built on it in production, a stub in tests).
    pub fn new(
        layout: Layout,
        store: Arc<Store>,
        oci: Arc<OciClient>,
        backend: Arc<dyn PullBackend>,
    ) -> Self {
        // One store of kernel files for all three: they share its lock and pins.
        let shared = SharedFiles::open(&layout.state_dir);
        DaemonState {
            images: Images::new(layout.clone(), store.clone(), shared.clone()),
            puller: ImagePuller::new(layout.images_dir(), store.clone(), backend, shared.clone()),
            kernels: Kernels::new(layout.clone(), store.clone(), oci, shared),
            vms: Vms::new(layout.clone(), store.clone()),
            layout,
            store,
            started: Instant::now(),
            shutdown: Notify::new(),
        }
    }
}
