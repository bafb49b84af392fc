use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const N1: Nonce = [1; NONCE_LEN];
const N2: Nonce = [2; NONCE_LEN];

/// Every marker found when `stream` is fed in `piece`-byte pieces: (kind, nonce, offset in
/// `stream` just past it).
fn scan_in_pieces(stream: &[u8], piece: usize) -> Vec<(Kind, Nonce, usize)> {
    let mut scanner = Scanner::new();
    let mut out = Vec::new();
    let mut at = 0;
    for chunk in stream.chunks(piece) {
        let mut data = chunk;
        while let Some(found) = scanner.feed(data) {
            let consumed = chunk.len() - data.len() + found.end;
            out.push((found.kind, found.nonce, at + consumed));
            data = &data[found.end..];
        }
        assert!(
            scanner.carry.len() < MARKER_LEN,
            "the scanner keeps less than a marker"
        );
        at += chunk.len();
    }
    out
}

#[test]
fn a_marker_reads_as_an_oversized_http2_frame() {
    let syn = encode(Kind::Syn, &N1);
    let length = u32::from_be_bytes([0, syn[0], syn[1], syn[2]]);
    assert_eq!(
        length,
        (1 << 24) - 1,
        "above any SETTINGS_MAX_FRAME_SIZE (at most 2^24-1)"
    );
    assert!(length > 16_384, "above the default maximum frame size");
    assert_eq!(syn.len(), MARKER_LEN);
    assert_eq!(&syn[3..8], b"SYN  ");
    assert_eq!(&syn[8..], &N1);
}

#[test]
fn markers_are_found_behind_garbage_and_split_across_any_pieces() {
    let mut stream = b"garbage \xFF\xFF junk \xFF\xFF\xFFSYX".to_vec();
    stream.extend_from_slice(&encode(Kind::Syn, &N1));
    let after_syn = stream.len();
    stream.extend_from_slice(b"\xFF\xFF\xFF\xFF");
    stream.extend_from_slice(&encode(Kind::Start, &N2));
    let after_start = stream.len();
    stream.extend_from_slice(b"PRI * HTTP/2.0");
    for piece in 1..=stream.len() {
        assert_eq!(
            scan_in_pieces(&stream, piece),
            vec![(Kind::Syn, N1, after_syn), (Kind::Start, N2, after_start)],
            "pieces of {piece} bytes"
        );
    }
}

#[test]
fn a_stream_of_ff_bytes_keeps_the_scanner_bounded() {
    let stream = vec![0xFF; 100_000];
    assert!(scan_in_pieces(&stream, 7).is_empty());
    assert!(scan_in_pieces(&stream, 4096).is_empty());
    let mut scanner = Scanner::new();
    for _ in 0..1000 {
        assert_eq!(scanner.feed(b"\xFF\xFF\xFFSY"), None);
        assert!(scanner.carry.len() < MARKER_LEN);
    }
}

#[test]
fn an_unknown_tag_is_not_a_marker() {
    let mut bogus = encode(Kind::Ack, &N1);
    bogus[3..8].copy_from_slice(b"NACK ");
    assert!(scan_in_pieces(&bogus, 3).is_empty());
    assert!(scan_in_pieces(&bogus, bogus.len()).is_empty());
}

#[tokio::test]
async fn host_and_guest_sync_and_keep_the_bytes_after_the_markers() {
    let (host, guest) = tokio::io::duplex(4096);
    let guest = tokio::spawn(async move {
        let mut s = guest_accept(guest).await.expect("guest sync");
        s.write_all(b"from guest").await.expect("write");
        let mut got = [0u8; 9];
        s.read_exact(&mut got).await.expect("read");
        got
    });
    let mut s = host_open(host, &N1, MAX_HOST_SCAN)
        .await
        .expect("host sync");
    s.write_all(b"from host").await.expect("write");
    let mut got = [0u8; 10];
    s.read_exact(&mut got).await.expect("read");
    assert_eq!(&got, b"from guest");
    assert_eq!(&guest.await.expect("join"), b"from host");
}

#[tokio::test]
async fn the_guest_skips_garbage_answers_one_ack_per_nonce_and_keeps_the_rest() {
    let (mut host, guest) = tokio::io::duplex(4096);
    let mut sent = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00stale h2".to_vec();
    sent.extend_from_slice(&encode(Kind::Syn, &N1));
    sent.extend_from_slice(&encode(Kind::Syn, &N1));
    sent.extend_from_slice(&encode(Kind::Start, &N2)); // not the answered nonce: skipped
    sent.extend_from_slice(&encode(Kind::Syn, &N1));
    sent.extend_from_slice(&encode(Kind::Start, &N1));
    sent.extend_from_slice(b"PRI * HTTP/2.0");
    host.write_all(&sent).await.expect("write");
    let mut s = guest_accept(guest).await.expect("guest sync");
    let mut rest = [0u8; 14];
    s.read_exact(&mut rest).await.expect("read");
    assert_eq!(&rest, b"PRI * HTTP/2.0");
    drop(s);
    let mut answer = Vec::new();
    host.read_to_end(&mut answer).await.expect("read");
    assert_eq!(answer, encode(Kind::Ack, &N1), "exactly one ACK");
}

#[tokio::test]
async fn the_guest_answers_a_newer_nonce() {
    let (mut host, guest) = tokio::io::duplex(4096);
    let mut sent = encode(Kind::Syn, &N1).to_vec();
    sent.extend_from_slice(&encode(Kind::Syn, &N2));
    sent.extend_from_slice(&encode(Kind::Start, &N1)); // the old connection's: ignored
    sent.extend_from_slice(&encode(Kind::Start, &N2));
    sent.extend_from_slice(b"x");
    host.write_all(&sent).await.expect("write");
    let mut s = guest_accept(guest).await.expect("guest sync");
    assert_eq!(s.pending(), b"x");
    let mut x = [0u8; 1];
    s.read_exact(&mut x).await.expect("read");
    drop(s);
    let mut answer = Vec::new();
    host.read_to_end(&mut answer).await.expect("read");
    let mut want = encode(Kind::Ack, &N1).to_vec();
    want.extend_from_slice(&encode(Kind::Ack, &N2));
    assert_eq!(answer, want);
}

#[tokio::test]
async fn the_guest_reports_a_host_that_is_not_connected() {
    let (host, guest) = tokio::io::duplex(64);
    drop(host);
    let err = guest_accept(guest).await.err().expect("an error");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn the_host_ignores_an_ack_of_another_nonce_and_repeats_its_syn() {
    let (host, mut guest) = tokio::io::duplex(4096);
    let fake = tokio::spawn(async move {
        let mut scanner = Scanner::new();
        let mut buf = [0u8; 256];
        let mut syns = 0;
        loop {
            let n = guest.read(&mut buf).await.expect("read");
            let mut data = &buf[..n];
            while let Some(found) = scanner.feed(data) {
                data = &data[found.end..];
                match found.kind {
                    Kind::Syn => {
                        syns += 1;
                        // A stale ACK first; the right one only on the third SYN.
                        let nonce = if syns < 3 { N2 } else { found.nonce };
                        guest
                            .write_all(&encode(Kind::Ack, &nonce))
                            .await
                            .expect("write");
                        if syns == 3 {
                            guest.write_all(b"h2 after ack").await.expect("write");
                        }
                    }
                    Kind::Start => return (syns, found.nonce),
                    Kind::Ack => panic!("the host sent an ACK"),
                }
            }
        }
    });
    let mut s = host_open(host, &N1, MAX_HOST_SCAN)
        .await
        .expect("host sync");
    let (syns, start) = fake.await.expect("join");
    assert_eq!((syns, start), (3, N1));
    let mut rest = [0u8; 12];
    s.read_exact(&mut rest).await.expect("read");
    assert_eq!(&rest, b"h2 after ack", "bytes after the ACK are kept");
}

#[tokio::test]
async fn the_host_scans_a_bounded_amount_of_garbage() {
    let (host, mut guest) = tokio::io::duplex(64 << 10);
    let flood = tokio::spawn(async move {
        let garbage = vec![0xFF; 64 << 10];
        let mut sent = 0usize;
        while guest.write_all(&garbage).await.is_ok() {
            sent += garbage.len();
        }
        sent
    });
    let err = host_open(host, &N1, MAX_HOST_SCAN)
        .await
        .err()
        .expect("an error");
    assert!(
        matches!(err, SyncError::TooMuch(n) if n == MAX_HOST_SCAN),
        "{err}"
    );
    let sent = flood.await.expect("join");
    assert!(
        sent <= MAX_HOST_SCAN + (128 << 10),
        "the host stopped reading: {sent}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_guest_gets_a_syn_every_interval() {
    let (host, mut guest) = tokio::io::duplex(4096);
    let open = tokio::spawn(async move { host_open(host, &N1, MAX_HOST_SCAN).await.map(|_| ()) });
    tokio::time::sleep(SYN_INTERVAL * 5 + SYN_INTERVAL / 2).await;
    open.abort();
    let mut got = Vec::new();
    guest.read_to_end(&mut got).await.expect("read");
    assert_eq!(
        got.len(),
        6 * MARKER_LEN,
        "one SYN at once, then one per interval"
    );
    assert!(got.chunks(MARKER_LEN).all(|m| m == encode(Kind::Syn, &N1)));
}

/// What hyper's HTTP/2 server (the agent before the sync) writes first on every session:
/// its SETTINGS frame.
const OLD_AGENT_SETTINGS: &[u8] =
    b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x02\x00\x00\x04\x00\x10\x00\x00\x00\x06\x00\x00\x40\x00";

#[test]
fn an_old_agents_settings_are_spotted_in_any_pieces_and_a_goaway_is_not() {
    let mut stream = b"\xFF\xFF\xFF noise".to_vec();
    stream.extend_from_slice(OLD_AGENT_SETTINGS);
    for piece in 1..=stream.len() {
        let mut detector = LegacyDetector::default();
        assert!(
            stream.chunks(piece).any(|c| detector.feed(c)),
            "pieces of {piece}"
        );
        assert!(detector.tail.len() < 9);
    }
    // A stale session of a new agent ends with GOAWAY(FRAME_SIZE_ERROR), then a SETTINGS
    // ACK may follow: neither is an old agent.
    let goaway = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x06";
    let settings_ack = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";
    let mut detector = LegacyDetector::default();
    assert!(!detector.feed(goaway));
    assert!(!detector.feed(settings_ack));
    assert!(!detector.feed(&encode(Kind::Ack, &N2)));
}

#[tokio::test]
async fn the_host_reports_an_agent_from_before_the_sync() {
    let (host, mut guest) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let mut syn = [0u8; MARKER_LEN];
        guest.read_exact(&mut syn).await.expect("read");
        guest.write_all(OLD_AGENT_SETTINGS).await.expect("write");
        // Held open: the host must decide from what it read.
        std::future::pending::<()>().await;
    });
    let err = host_open(host, &N1, MAX_HOST_SCAN)
        .await
        .err()
        .expect("an error");
    assert!(matches!(err, SyncError::Legacy), "{err}");
}
