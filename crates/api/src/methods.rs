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
pub const KERNEL_IMPORT: &str = "kernel.import";
pub const KERNEL_LIST: &str = "kernel.list";
pub const KERNEL_SHOW: &str = "kernel.show";
pub const KERNEL_DELETE: &str = "kernel.delete";
pub const KERNEL_PUSH: &str = "kernel.push";
pub const KERNEL_PULL: &str = "kernel.pull";
pub const VM_CREATE: &str = "vm.create";
pub const VM_START: &str = "vm.start";
pub const VM_STOP: &str = "vm.stop";
pub const VM_KILL: &str = "vm.kill";
pub const VM_DELETE: &str = "vm.delete";
pub const VM_LIST: &str = "vm.list";
pub const VM_SHOW: &str = "vm.show";
pub const VM_LOGS: &str = "vm.logs";
pub const VM_EXEC: &str = "vm.exec";
pub const VM_PORTS: &str = "vm.ports";
pub const VM_CP_PUT: &str = "vm.cp.put";
pub const VM_CP_GET: &str = "vm.cp.get";
pub const VM_PROXY: &str = "vm.proxy";
pub const SSH_CONFIG: &str = "ssh.config";
