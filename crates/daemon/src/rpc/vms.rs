//! `vm.*`, `ssh.config` and `ssh.keys`. VM verbs are async (they wait on the guest); the
//! store reads of `list` and `show` are short and run inline.

use banger_api::methods::snapshot;
use banger_api::methods::ssh;
use banger_api::methods::vm::{
    CpGet, CpPut, Create, Defaults, Delete, Exec, Hold, Kill, List, Logs, Pause, Ports, Proxy,
    Prune, Restart, Resume, Show, Snapshot, Start, Stats, Stop,
};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.call::<Create, _, _>(|s, p, ctx| async move { s.vms.create(p, &ctx).await });
    t.call::<Start, _, _>(|s, p, ctx| async move { s.vms.start(p, &ctx).await });
    t.call::<Stop, _, _>(|s, p, _| async move { s.vms.stop(p).await });
    t.call::<Restart, _, _>(|s, p, ctx| async move { s.vms.restart(p, &ctx).await });
    t.call::<Prune, _, _>(|s, p, _| async move { s.vms.prune(p).await });
    t.call::<Stats, _, _>(|s, p, _| async move { s.vms.stats(p).await });
    t.call::<Kill, _, _>(|s, p, _| async move { s.vms.kill(p).await });
    t.call::<Delete, _, _>(|s, p, _| async move { s.vms.delete(p).await });
    t.call::<List, _, _>(|s, _, _| async move { s.vms.list() });
    t.call::<Show, _, _>(|s, p, _| async move { s.vms.show(&p.vm) });
    t.call::<Logs, _, _>(|s, p, ctx| async move { s.vms.logs(p, &ctx).await });
    t.call::<Hold, _, _>(|s, _, ctx| async move { s.vms.hold(&ctx).await });
    t.call::<Ports, _, _>(|s, p, _| async move { s.vms.ports(p).await });
    t.call::<Pause, _, _>(|s, p, _| async move { s.vms.pause(p).await });
    t.call::<Resume, _, _>(|s, p, _| async move { s.vms.resume(p).await });
    t.call::<Snapshot, _, _>(|s, p, _| async move { s.vms.snapshot(p).await });
    t.blocking::<snapshot::List, _>(|s, _, _| s.vms.snapshot_list());
    t.blocking::<snapshot::Show, _>(|s, p, _| s.vms.snapshot_show(p));
    t.call::<snapshot::Delete, _, _>(|s, p, _| async move { s.vms.snapshot_delete(p).await });
    t.blocking::<ssh::Config, _>(|s, _, _| s.vms.ssh_info());
    t.blocking::<ssh::Keys, _>(|s, _, _| s.vms.ssh_keys());
    t.blocking::<Defaults, _>(|_, _, _| crate::vms::naming::load_defaults());
    t.upgrade::<Exec, _, _>(|s, p| async move { s.vms.exec(p).await });
    t.upgrade::<CpPut, _, _>(|s, p| async move { s.vms.cp_put(p).await });
    t.upgrade::<CpGet, _, _>(|s, p| async move { s.vms.cp_get(p).await });
    t.upgrade::<Proxy, _, _>(|s, p| async move { s.vms.proxy(p).await });
}
