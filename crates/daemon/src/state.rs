//! What every request handler shares.

use std::sync::Arc;
use std::time::Instant;

use banger_api::layout::Layout;
use tokio::sync::Notify;

use crate::images::Images;
use crate::kernels::Kernels;
use crate::pull::{PullBackend, Puller};
use crate::store::Store;
use crate::vms::Vms;

pub struct DaemonState {
    pub layout: Layout,
    pub store: Arc<Store>,
    pub images: Images,
    pub puller: Puller,
    pub kernels: Kernels,
    pub vms: Arc<Vms>,
    pub started: Instant,
    /// Notified once to stop accepting and drain connections.
    pub shutdown: Notify,
}

impl DaemonState {
    pub fn new(layout: Layout, store: Arc<Store>, backend: Arc<dyn PullBackend>) -> Self {
        DaemonState {
            images: Images::new(layout.clone(), store.clone()),
            puller: Puller::new(layout.images_dir(), store.clone(), backend),
            kernels: Kernels::new(layout.clone(), store.clone()),
            vms: Vms::new(layout.clone(), store.clone()),
            layout,
            store,
            started: Instant::now(),
            shutdown: Notify::new(),
        }
    }
}
