//! `image.*`.

use banger_api::image::ImageList;
use banger_api::methods::image::{CachePrune, Delete, List, Pull, Register, Show};

use super::Table;

pub(super) fn register(t: &mut Table) {
    t.blocking::<Register, _>(|s, p, _| s.images.register(p));
    t.blocking::<List, _>(|s, _, _| s.images.list().map(|images| ImageList { images }));
    t.blocking::<Show, _>(|s, p, _| s.images.details(&p.image));
    t.blocking::<Delete, _>(|s, p, _| s.images.delete(&p.image));
    t.blocking::<Pull, _>(|s, p, ctx| s.puller.pull(&s.images, &s.kernels, p, ctx));
    t.blocking::<CachePrune, _>(|s, p, _| s.puller.prune_cache(p.dry_run));
}
