//! What every request handler shares.

use std::sync::Arc;
use std::time::Instant;

use banger_api::layout::Layout;
use tokio::sync::Notify;

use crate::images::Images;
use crate::store::Store;

pub struct DaemonState {
    pub layout: Layout,
    pub store: Arc<Store>,
    pub images: Images,
    pub started: Instant,
    /// Notified once to stop accepting and drain connections.
    pub shutdown: Notify,
}

impl DaemonState {
    pub fn new(layout: Layout, store: Arc<Store>) -> Self {
        DaemonState {
            images: Images::new(layout.clone(), store.clone()),
            layout,
            store,
            started: Instant::now(),
            shutdown: Notify::new(),
        }
    }
}
