//! `vm cp` from a hostile guest: an archive whose first header is a GNU long name of
//! 1 GiB must not cost the CLI 1 GiB. A test binary of its own, so the peak RSS
//! (`getrusage`) is this test's alone.

use banger_client::transfer::{Destination, Limits, download};
use tokio::io::AsyncWriteExt;

/// Peak resident set of this process, in bytes.
fn peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage for the duration of the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(r, 0, "getrusage");
    usage.ru_maxrss as u64 * 1024
}

#[tokio::test]
async fn a_1_gib_long_name_header_keeps_the_cli_small() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = Destination {
        dir: tmp.path().to_path_buf(),
        top: "out".into(),
        name: "out".into(),
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("././@LongLink").expect("name");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(1 << 30);
    header.set_cksum();
    let header = header.as_bytes().to_vec();
    let (ours, mut guest) = tokio::io::duplex(256 << 10);
    // The guest: the header, then name bytes without end (bounded at 2 GiB, so a broken
    // guard ends the test with a high RSS rather than never).
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        if guest.write_all(&header).await.is_err() {
            return sent;
        }
        let chunk = vec![b'a'; 1 << 20];
        while sent < 2 << 30 {
            if guest.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    let e = download(ours, dest, Limits::default())
        .await
        .expect_err("refused");
    let sent = sender.await.expect("sender");
    let peak = peak_rss();
    assert!(peak < 128 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(
        format!("{e:#}").contains("tar extension header (GNU long name) declares 1073741824 bytes"),
        "{e:#}"
    );
    assert!(
        sent < 64 << 20,
        "the download stopped early ({sent} bytes sent)"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).expect("ls").count(),
        0,
        "nothing is left behind"
    );
}
