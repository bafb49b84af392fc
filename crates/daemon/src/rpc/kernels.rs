//! `kernel.*`.

use banger_api::kernel::KernelList;
use banger_api::methods::kernel::{Delete, Import, List, Pull, Push, Show};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.blocking::<Import, _>(|s, p, _| s.kernels.import(p));
    t.blocking::<List, _>(|s, _, _| s.kernels.list().map(|kernels| KernelList { kernels }));
    t.blocking::<Show, _>(|s, p, _| s.kernels.show(&p.kernel));
    t.blocking::<Delete, _>(|s, p, _| s.kernels.delete(&p.kernel, p.force));
    t.blocking::<Push, _>(|s, p, ctx| s.kernels.push(p, ctx));
    t.blocking::<Pull, _>(|s, p, ctx| s.kernels.pull(p, ctx));
}
