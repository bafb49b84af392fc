//! What a hostile guest sends the host, outside the archives: `vm ports`' `/proc/net`
//! tables and the exec stream's frames. The first byte picks the parser; neither may panic,
//! hang or allocate more than its input allows (frames are capped at 1 MiB).
#![no_main]

use banger_guest_proto::frame::FrameBuffer;
use banger_guest_proto::{ExecOutput, proc_net};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 2 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            for state in ["0A", "07"] {
                let _ = proc_net::sockets_in_state(&text, state);
            }
        }
        _ => {
            let mut frames = FrameBuffer::default();
            for chunk in rest.chunks(97) {
                frames.push(chunk);
                while let Ok(Some(_)) = frames.next::<ExecOutput>() {}
            }
        }
    }
});
