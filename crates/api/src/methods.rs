//! Method names, as in PRODUCT.md. Kept as constants so daemon routing and client calls
//! cannot drift apart.

pub const PING: &str = "ping";
pub const VERSION: &str = "version";
pub const DAEMON_SHUTDOWN: &str = "daemon.shutdown";
pub const IMAGE_REGISTER: &str = "image.register";
pub const IMAGE_LIST: &str = "image.list";
pub const IMAGE_SHOW: &str = "image.show";
pub const IMAGE_DELETE: &str = "image.delete";
pub const IMAGE_PULL: &str = "image.pull";
pub const IMAGE_CACHE_PRUNE: &str = "image.cache.prune";
