//! `image.*`.

use banger_api::image::ImageList;
use banger_api::methods::image::{CachePrune, Delete, List, Pull, Register, Show, Warm};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.blocking::<Register, _>(|s, p, _| s.images.register(p));
    t.blocking::<List, _>(|s, _, _| s.images.list().map(|images| ImageList { images }));
    t.blocking::<Show, _>(|s, p, _| s.images.details(&p.image));
    // Its ready-snapshots (caches of warm starts) go first; a user's snapshots keep it.
    t.blocking::<Delete, _>(|s, p, _| {
        s.vms.drop_warm_of_image(&p.image)?;
        s.images.delete(&p.image)
    });
    t.call::<Warm, _, _>(|s, p, ctx| async move { s.vms.warm_image(p, &ctx).await });
    t.blocking::<Pull, _>(|s, p, ctx| s.puller.pull(&s.images, &s.kernels, p, ctx));
    t.blocking::<CachePrune, _>(|s, p, _| s.puller.prune_cache(p.dry_run));
}
