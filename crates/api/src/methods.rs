//! Every method as a type: its wire name, how it answers, its params and its result.
//!
//! The daemon registers a handler per type and the CLI calls by type, so a method's name,
//! params and result cannot drift apart between the two. The module path mirrors the wire
//! name: [`image::Pull`] is `image.pull`, [`vm::CpPut`] is `vm.cp.put`.
//!
//! Three kinds of method (see [`Kind`]): plain ones answer one JSON result; streaming ones
//! answer the same, or progress events then the result when asked for NDJSON; upgrade ones
//! switch the connection to a byte stream and have no JSON result.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How a method answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One JSON result.
    Plain,
    /// One JSON result; with `Accept: application/x-ndjson`, progress events first.
    Streaming,
    /// `101 Switching Protocols` with this `Upgrade` token, then a byte stream.
    Upgrade(&'static str),
}

/// What every method has: a name and params.
pub trait Method {
    /// The name in `POST /v1/<NAME>`.
    const NAME: &'static str;
    /// How it answers; [`Call`], [`Streaming`] and [`Upgrade`] are implemented to match.
    const KIND: Kind;
    /// The JSON body of the request.
    type Params: Serialize + DeserializeOwned + Send + 'static;
}

/// A method answered with a JSON result ([`Kind::Plain`] or [`Kind::Streaming`]).
pub trait Call: Method {
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

/// A [`Call`] that can stream progress events before its result.
pub trait Streaming: Call {}

/// A method that upgrades the connection ([`Kind::Upgrade`]).
pub trait Upgrade: Method {
    /// The `Upgrade` header token, the same as in [`Kind::Upgrade`].
    const PROTOCOL: &'static str;
}

/// Declares one method type; the kind and its marker traits are written together, so
/// they cannot disagree.
macro_rules! method {
    ($(#[$doc:meta])* $ty:ident = $name:literal, plain: $params:ty => $result:ty) => {
        method!(@type $(#[$doc])* $ty = $name, $crate::methods::Kind::Plain, $params);
        impl $crate::methods::Call for $ty {
            type Result = $result;
        }
    };
    ($(#[$doc:meta])* $ty:ident = $name:literal, streaming: $params:ty => $result:ty) => {
        method!(@type $(#[$doc])* $ty = $name, $crate::methods::Kind::Streaming, $params);
        impl $crate::methods::Call for $ty {
            type Result = $result;
        }
        impl $crate::methods::Streaming for $ty {}
    };
    ($(#[$doc:meta])* $ty:ident = $name:literal, upgrade($token:expr): $params:ty) => {
        method!(@type $(#[$doc])* $ty = $name, $crate::methods::Kind::Upgrade($token), $params);
        impl $crate::methods::Upgrade for $ty {
            const PROTOCOL: &'static str = $token;
        }
    };
    (@type $(#[$doc:meta])* $ty:ident = $name:literal, $kind:expr, $params:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;
        impl $crate::methods::Method for $ty {
            const NAME: &'static str = $name;
            const KIND: $crate::methods::Kind = $kind;
            type Params = $params;
        }
    };
}

/// The daemon itself: `ping`, `version`, `daemon.shutdown`.
pub mod system {
    use crate::system::{Empty, PingResult, ShutdownResult, UploadParams, UploadRef, VersionInfo};
    use crate::vm::STREAM_UPGRADE;

    method!(
        /// Is the daemon up (the CLI's autostart polls it).
        Ping = "ping", plain: Empty => PingResult
    );
    method!(Version = "version", plain: Empty => VersionInfo);
    method!(
        /// Stop accepting; in-flight requests finish first.
        Shutdown = "daemon.shutdown", plain: Empty => ShutdownResult
    );
    method!(
        /// A file from a client on another machine (`--host`: `image pull oci-archive:…`),
        /// kept on the daemon's host for the call that reads it.
        Upload = "upload", upgrade(STREAM_UPGRADE): UploadParams
    );
    method!(
        /// Removes a file `upload` kept.
        UploadDelete = "upload.delete", plain: UploadRef => Empty
    );
}

/// `image.*`.
pub mod image {
    use crate::image::{
        CachePruneParams, CachePruned, Image, ImageDeleted, ImageDetails, ImageList, ImageRef,
        ImageRegisterParams,
    };
    use crate::pull::ImagePullParams;
    use crate::system::Empty;

    method!(Register = "image.register", plain: ImageRegisterParams => Image);
    method!(List = "image.list", plain: Empty => ImageList);
    method!(Show = "image.show", plain: ImageRef => ImageDetails);
    method!(Delete = "image.delete", plain: ImageRef => ImageDeleted);
    method!(Pull = "image.pull", streaming: ImagePullParams => Image);
    method!(CachePrune = "image.cache.prune", plain: CachePruneParams => CachePruned);
    method!(
        /// The image's ready-snapshot for VMs created with these params (warm starts),
        /// made now unless it exists.
        Warm = "image.warm", streaming: crate::vm::VmCreateParams => crate::snapshot::Snapshot
    );
}

/// `kernel.*`.
pub mod kernel {
    use crate::kernel::{
        Kernel, KernelDeleteParams, KernelDeleted, KernelImportParams, KernelList,
        KernelPullParams, KernelPushParams, KernelPushed, KernelRef,
    };
    use crate::system::Empty;

    method!(Import = "kernel.import", plain: KernelImportParams => Kernel);
    method!(List = "kernel.list", plain: Empty => KernelList);
    method!(Show = "kernel.show", plain: KernelRef => Kernel);
    method!(Delete = "kernel.delete", plain: KernelDeleteParams => KernelDeleted);
    method!(Push = "kernel.push", streaming: KernelPushParams => KernelPushed);
    method!(Pull = "kernel.pull", streaming: KernelPullParams => Kernel);
}

/// `vm.*`.
pub mod vm {
    use crate::system::Empty;
    use crate::vm::VmHoldEnded;
    use crate::vm::{
        EXEC_UPGRADE, STREAM_UPGRADE, Vm, VmCpGetParams, VmCpPutParams, VmCreateParams, VmDefaults,
        VmDeleteParams, VmDeleted, VmExecParams, VmList, VmLogs, VmLogsParams, VmPorts,
        VmProxyParams, VmPruneParams, VmPruned, VmRef, VmSnapshotParams, VmStartParams, VmStats,
    };

    method!(Create = "vm.create", streaming: VmCreateParams => Vm);
    method!(Start = "vm.start", streaming: VmStartParams => Vm);
    method!(Stop = "vm.stop", plain: VmRef => Vm);
    method!(
        /// `vm.stop` when the VM is up, then `vm.start`: same disks.
        Restart = "vm.restart", streaming: VmStartParams => Vm
    );
    method!(Prune = "vm.prune", plain: VmPruneParams => VmPruned);
    method!(Stats = "vm.stats", plain: VmRef => VmStats);
    method!(Kill = "vm.kill", plain: VmRef => Vm);
    method!(Delete = "vm.delete", plain: VmDeleteParams => VmDeleted);
    method!(List = "vm.list", plain: Empty => VmList);
    method!(Show = "vm.show", plain: VmRef => Vm);
    method!(
        /// Streams only with `follow`.
        Logs = "vm.logs", streaming: VmLogsParams => VmLogs
    );
    method!(Ports = "vm.ports", plain: VmRef => VmPorts);
    method!(
        /// The image and kernel `vm run` uses when none is given (the daemon's config).
        Defaults = "vm.defaults", plain: Empty => VmDefaults
    );
    method!(
        /// A lease for `vm.create`'s `lease`: its first event carries the id; it lasts
        /// until the client goes away (its VMs are then killed and deleted).
        Hold = "vm.hold", streaming: Empty => VmHoldEnded
    );
    method!(
        /// Stops the guest's vCPUs; memory kept.
        Pause = "vm.pause", plain: VmRef => Vm
    );
    method!(Resume = "vm.resume", plain: VmRef => Vm);
    method!(
        /// Memory, device state and disks of a running or paused VM.
        Snapshot = "vm.snapshot", plain: VmSnapshotParams => crate::snapshot::Snapshot
    );
    method!(Exec = "vm.exec", upgrade(EXEC_UPGRADE): VmExecParams);
    method!(CpPut = "vm.cp.put", upgrade(STREAM_UPGRADE): VmCpPutParams);
    method!(CpGet = "vm.cp.get", upgrade(STREAM_UPGRADE): VmCpGetParams);
    method!(Proxy = "vm.proxy", upgrade(STREAM_UPGRADE): VmProxyParams);
}

/// `snapshot.*` (taking one is `vm.snapshot`).
pub mod snapshot {
    use crate::snapshot::{SnapshotDeleted, SnapshotList, SnapshotRef};
    use crate::system::Empty;

    method!(List = "snapshot.list", plain: Empty => SnapshotList);
    method!(Show = "snapshot.show", plain: SnapshotRef => crate::snapshot::Snapshot);
    method!(
        /// Refused while forks of it exist.
        Delete = "snapshot.delete", plain: SnapshotRef => SnapshotDeleted
    );
}

/// `ssh.*`.
pub mod ssh {
    use crate::system::Empty;
    use crate::vm::{SshInfo, SshKeys};

    method!(
        /// banger's SSH identity and known_hosts, for `banger ssh-config`.
        Config = "ssh.config", plain: Empty => SshInfo
    );
    method!(
        /// The contents of that identity and known_hosts, for a client on another machine
        /// (`banger --host ssh://… ssh-config`).
        Keys = "ssh.keys", plain: Empty => SshKeys
    );
}
