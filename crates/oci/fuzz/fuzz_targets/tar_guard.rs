//! The host's tar guard (`banger_oci::tar_guard`) in front of the tar crate, as the `vm cp`
//! extractor and the layer flattener use it: any bytes must end in Ok or Err, never a
//! panic, a hang, or an allocation beyond the guard's extension-header limit.
#![no_main]

use banger_oci::tar_guard::TarGuard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut archive = tar::Archive::new(TarGuard::new(data, 4096));
    let Ok(entries) = archive.entries() else {
        return;
    };
    for entry in entries.take(10_000) {
        let Ok(mut entry) = entry else {
            return;
        };
        let _ = entry.path();
        let _ = entry.link_name();
        let _ = std::io::copy(&mut entry, &mut std::io::sink());
    }
});
