//! `image.*`.

use banger_api::image::ImageList;
use banger_api::methods::image::{CachePrune, Delete, List, Pull, Register, Show};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.blocking::<Register, _>(|s, p, _| s.images.register(p));
    t.blocking::<List, _>(|s, _, _| s.images.list().map(|images| ImageList { images }));
    t.blocking::<Show, _>(|s, p, _| s.images.details(&p.image));
    t.blocking::<Delete, _>(|s, p, _| s.images.delete(&p.image));
    t.blocking::<Pull, _>(|s, p, ctx| {
        // A `--kernel-ref` that is not local comes from the kernel source, if any. Here
        // rather than in `ImagePuller::pull` because the puller does not know the kernel store.
        if p.kernel.kernel_path.is_none() {
            s.kernels
                .ensure_local(p.kernel.kernel_ref.as_deref(), ctx)?;
        }
        s.puller.pull(&s.images, p, ctx)
    });
    t.blocking::<CachePrune, _>(|s, p, _| s.puller.prune_cache(p.dry_run));
}
