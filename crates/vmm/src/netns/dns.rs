//! The DNS messages banger's forwarder handles (see [`super::forwarder`]): only what it
//! needs is parsed, every length is checked against the buffer, nothing panics on
//! hostile bytes (every input comes from the guest or from the network).
//!
//! A query is accepted when it is a standard query (`QR=0`, `OPCODE=0`) with exactly one
//! question, no answer or authority records and an uncompressed name; an answer when it
//! has our ID, `QR=1` and echoes that question. From an answer only the A and AAAA
//! records of the answer section are read (their addresses and TTLs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::policy::{Policy, Target};

/// The largest message handled either way (larger ones are dropped).
pub const MAX_MESSAGE: usize = 4096;
const HEADER: usize = 12;
const MAX_NAME: usize = 255;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// `RCODE`s the forwarder answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    /// The query is malformed.
    FormErr = 1,
    /// The upstream resolver did not answer (or the ruleset could not be updated).
    ServFail = 2,
    /// The policy does not allow the name.
    Refused = 5,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct Malformed(pub &'static str);

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The query's ID.
    pub id: u16,
    /// The name, lowercase, without the trailing dot; `None` when a label holds a byte
    /// no host name has (such a name matches no rule).
    pub name: Option<String>,
    /// `QTYPE`.
    pub qtype: u16,
    /// Where the question section ends in the query.
    pub end: usize,
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, Malformed> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(Malformed("truncated")),
    }
}

fn u32_at(msg: &[u8], at: usize) -> Result<u32, Malformed> {
    match msg.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Malformed("truncated")),
    }
}

/// Parses a query from the guest.
pub fn parse_query(msg: &[u8]) -> Result<Question, Malformed> {
    if msg.len() < HEADER {
        return Err(Malformed("shorter than a header"));
    }
    if msg.len() > MAX_MESSAGE {
        return Err(Malformed("too long"));
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 != 0 || (flags >> 11) & 0xF != 0 {
        return Err(Malformed("not a standard query"));
    }
    if u16_at(msg, 4)? != 1 || u16_at(msg, 6)? != 0 || u16_at(msg, 8)? != 0 {
        return Err(Malformed("not exactly one question"));
    }
    let (name, at) = read_plain_name(msg, HEADER)?;
    let qtype = u16_at(msg, at)?;
    u16_at(msg, at + 2)?;
    Ok(Question {
        id: u16_at(msg, 0)?,
        name,
        qtype,
        end: at + 4,
    })
}

/// An uncompressed name at `at`: the name (see [`Question::name`]) and where it ends.
fn read_plain_name(msg: &[u8], mut at: usize) -> Result<(Option<String>, usize), Malformed> {
    let start = at;
    let mut name = String::new();
    let mut plain = true;
    loop {
        let len = usize::from(*msg.get(at).ok_or(Malformed("truncated name"))?);
        if len & 0xC0 != 0 {
            return Err(Malformed("a compressed or extended label in a question"));
        }
        if at + 1 - start + len > MAX_NAME {
            return Err(Malformed("a name longer than 255 bytes"));
        }
        if len == 0 {
            return Ok((plain.then_some(name), at + 1));
        }
        let label = msg
            .get(at + 1..at + 1 + len)
            .ok_or(Malformed("truncated label"))?;
        plain &= label
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if plain {
            if !name.is_empty() {
                name.push('.');
            }
            name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        }
        at += 1 + len;
    }
}

/// Skips a possibly compressed name at `at` (pointers are not followed: the name's
/// text is not needed) and returns where it ends.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, Malformed> {
    let start = at;
    loop {
        let len = *msg.get(at).ok_or(Malformed("truncated name"))?;
        match len & 0xC0 {
            0xC0 => {
                msg.get(at + 1).ok_or(Malformed("truncated pointer"))?;
                return Ok(at + 2);
            }
            0 if len == 0 => return Ok(at + 1),
            0 => {
                at += 1 + usize::from(len);
                if at - start > MAX_NAME {
                    return Err(Malformed("a name longer than 255 bytes"));
                }
            }
            _ => return Err(Malformed("an extended label type")),
        }
    }
}

/// The answer to `query` (whose question is `q`) carrying only `rcode`: the header with
/// `QR`, `RA`, the query's `RD`, and the question.
pub fn reply_with(query: &[u8], q: &Question, rcode: Rcode) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end);
    let rd = query.get(2).map_or(0, |b| b & 0x01);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.push(0x80 | rd);
    out.push(0x80 | rcode as u8);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(query.get(HEADER..q.end).unwrap_or_default());
    out
}

/// A header-only `FORMERR` for a query whose question did not parse (`None` when not
/// even the header is there, or when it is itself an answer: never answer answers).
pub fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    let head = query.get(..HEADER)?;
    if head[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![head[0], head[1], 0x80 | (head[2] & 0x01), 0x80 | 1];
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// An address from an answer, with its TTL in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The address.
    pub addr: IpAddr,
    /// Its TTL.
    pub ttl: u32,
}

/// Checks that `answer` answers `query` (sent upstream with ID `id`) and returns the
/// A/AAAA addresses of its answer section.
pub fn parse_answer(
    answer: &[u8],
    query: &[u8],
    q: &Question,
    id: u16,
) -> Result<Vec<Learned>, Malformed> {
    if answer.len() < HEADER || answer.len() > MAX_MESSAGE {
        return Err(Malformed("bad length"));
    }
    if u16_at(answer, 0)? != id {
        return Err(Malformed("another ID"));
    }
    if u16_at(answer, 2)? & 0x8000 == 0 {
        return Err(Malformed("not an answer"));
    }
    if u16_at(answer, 4)? != 1 {
        return Err(Malformed("not one question"));
    }
    let theirs = answer
        .get(HEADER..q.end)
        .ok_or(Malformed("truncated question"))?;
    let ours = query.get(HEADER..q.end).ok_or(Malformed("bad query"))?;
    if !theirs.eq_ignore_ascii_case(ours) {
        return Err(Malformed("another question"));
    }
    let mut at = q.end;
    let mut out = Vec::new();
    for _ in 0..u16_at(answer, 6)? {
        at = skip_name(answer, at)?;
        let rtype = u16_at(answer, at)?;
        let class = u16_at(answer, at + 2)?;
        let ttl = u32_at(answer, at + 4)?;
        let len = usize::from(u16_at(answer, at + 8)?);
        let data = answer
            .get(at + 10..at + 10 + len)
            .ok_or(Malformed("truncated record"))?;
        at += 10 + len;
        let addr = match (rtype, class, data.len()) {
            (TYPE_A, CLASS_IN, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (TYPE_AAAA, CLASS_IN, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        // A TTL with the top bit set is treated as zero (RFC 2181 § 8).
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        out.push(Learned { addr, ttl });
    }
    Ok(out)
}

/// `answer` with its ID set to `id` (the guest's).
pub fn with_id(answer: &[u8], id: u16) -> Vec<u8> {
    let mut out = answer.to_vec();
    if let Some(head) = out.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// `query` with its ID set to `id` (the forwarder's own, for upstream).
pub fn query_with_id(query: &[u8], id: u16) -> Vec<u8> {
    with_id(query, id)
}

/// Whether `target` names `name`: a domain exactly, a wildcard `*.d` any name under `d`
/// (not `d` itself). Addresses name nothing.
pub fn names(target: &Target, name: &str) -> bool {
    match target {
        Target::Domain(d) => name == d,
        Target::Wildcard(d) => name
            .strip_suffix(d.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        Target::Net(_) => false,
    }
}

/// What the policy says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not allowed (or denied): answered `REFUSED`, never sent upstream.
    Refuse,
    /// Allowed by these domain entries (indices of [`super::policy::domain_allows`], whose sets [`super::policy::domain_set`] names): resolved
    /// upstream, and the addresses go into their sets.
    Allow(Vec<usize>),
}

/// The verdict of `policy` on `name` (`None`: a name no rule can match).
pub fn verdict(policy: &Policy, name: Option<&str>) -> Verdict {
    let Some(name) = name else {
        return Verdict::Refuse;
    };
    if policy.deny.iter().any(|d| names(&d.target, name)) {
        return Verdict::Refuse;
    }
    let sets: Vec<usize> = super::policy::domain_allows(policy)
        .enumerate()
        .filter(|(_, d)| names(&d.target, name))
        .map(|(i, _)| i)
        .collect();
    if sets.is_empty() {
        Verdict::Refuse
    } else {
        Verdict::Allow(sets)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` of type `qtype` with ID `id` (RD set).
    pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    /// An answer to `q` (ID `id`) with a CNAME then these records, names compressed.
    pub(crate) fn answer(q: &[u8], id: u16, records: &[(u16, &[u8], u32)]) -> Vec<u8> {
        let mut m = q.to_vec();
        m[0..2].copy_from_slice(&id.to_be_bytes());
        m[2] |= 0x80;
        m[3] = 0x80;
        m[6..8].copy_from_slice(&(records.len() as u16 + 1).to_be_bytes());
        // CNAME: c0 0c → the question's name, data "x" + pointer.
        m.extend_from_slice(&[
            0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xC0, 0x0C,
        ]);
        for (ty, data, ttl) in records {
            m.extend_from_slice(&[0xC0, 0x0C]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn queries_parse() {
        let m = query(0x1234, "Deb.Example.ORG", TYPE_AAAA);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name.as_deref(), Some("deb.example.org"));
        assert_eq!(q.qtype, TYPE_AAAA);
        assert_eq!(q.end, m.len());
        let odd = query(1, "a b.example.org", TYPE_A);
        assert_eq!(parse_query(&odd).unwrap().name, None);
        let mut dotted = query(1, "ab.example.org", TYPE_A);
        dotted[13] = b'.';
        assert_eq!(parse_query(&dotted).unwrap().name, None);
    }

    #[test]
    fn hostile_queries_are_refused_without_panicking() {
        let good = query(7, "example.org", TYPE_A);
        // Every truncation, and every single-byte corruption of every position.
        for n in 0..good.len() {
            let _ = parse_query(&good[..n]);
            assert!(parse_query(&good[..n]).is_err(), "{n} bytes parsed");
        }
        for i in 0..good.len() {
            for b in [0x00, 0x3F, 0x40, 0xC0, 0xFF] {
                let mut m = good.clone();
                m[i] = b;
                if let Ok(q) = parse_query(&m) {
                    let _ = reply_with(&m, &q, Rcode::Refused);
                }
                let _ = formerr(&m);
            }
        }
        let mut answer_bit = good.clone();
        answer_bit[2] |= 0x80;
        assert!(parse_query(&answer_bit).is_err());
        assert_eq!(formerr(&answer_bit), None, "answers are never answered");
        let mut two = good.clone();
        two[5] = 2;
        assert!(parse_query(&two).is_err());
        let mut compressed = good[..12].to_vec();
        compressed.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(parse_query(&compressed).is_err());
        let mut long = good[..12].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_query(&long).is_err(), "a 320-byte name");
        assert!(parse_query(&vec![0; MAX_MESSAGE + 1]).is_err());
        // Random bytes.
        let mut x: u32 = 0x9E37_79B9;
        for _ in 0..20_000 {
            let len = (x % 64) as usize;
            let m: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Ok(q) = parse_query(&m) {
                let _ = parse_answer(&m, &m, &q, q.id);
            }
            let _ = formerr(&m);
        }
    }

    #[test]
    fn refusals_echo_the_question() {
        let m = query(0xBEEF, "evil.example", TYPE_A);
        let q = parse_query(&m).unwrap();
        let r = reply_with(&m, &q, Rcode::Refused);
        assert_eq!(&r[0..2], &[0xBE, 0xEF]);
        assert_eq!(r[2], 0x81, "QR and RD");
        assert_eq!(r[3] & 0x0F, 5);
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], &m[12..]);
        let f = formerr(&m[..12]).unwrap();
        assert_eq!(f[3] & 0x0F, 1);
        assert_eq!(formerr(&m[..11]), None);
    }

    #[test]
    fn answers_give_their_addresses() {
        let m = query(9, "deb.example.org", TYPE_A);
        let q = parse_query(&m).unwrap();
        let a = answer(
            &m,
            0x4242,
            &[
                (TYPE_A, &[192, 0, 2, 1], 30),
                (
                    TYPE_AAAA,
                    &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
                    7200,
                ),
                (TYPE_A, &[1, 2, 3], 30),
                (16, b"\x03txt", 30),
                (TYPE_A, &[198, 51, 100, 9], 0x8000_0000),
            ],
        );
        let got = parse_answer(&a, &m, &q, 0x4242).unwrap();
        let want: Vec<Learned> = [
            ("192.0.2.1", 30),
            ("2001:db8::5", 7200),
            ("198.51.100.9", 0),
        ]
        .iter()
        .map(|(a, ttl)| Learned {
            addr: a.parse().unwrap(),
            ttl: *ttl,
        })
        .collect();
        assert_eq!(got, want);
        assert!(parse_answer(&a, &m, &q, 0x4243).is_err(), "another ID");
        let other = query(9, "evil.example.org", TYPE_A);
        let oa = answer(&other, 0x4242, &[(TYPE_A, &[192, 0, 2, 66], 30)]);
        assert!(
            parse_answer(&oa, &m, &q, 0x4242).is_err(),
            "another question"
        );
        for n in 12..a.len() {
            let _ = parse_answer(&a[..n], &m, &q, 0x4242);
        }
        for i in 0..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 0xFF;
            let _ = parse_answer(&bad, &m, &q, 0x4242);
        }
        let back = with_id(&a, 9);
        assert_eq!(&back[0..2], &[0, 9]);
        assert_eq!(&back[2..], &a[2..]);
    }

    #[test]
    fn names_and_wildcards() {
        let d = |s: &str| s.parse::<super::super::policy::Dest>().unwrap();
        let p = |s: &str| d(s).target;
        assert!(names(&p("example.org"), "example.org"));
        assert!(!names(&p("example.org"), "www.example.org"));
        assert!(names(&p("*.example.org"), "www.example.org"));
        assert!(names(&p("*.example.org"), "a.b.example.org"));
        assert!(!names(&p("*.example.org"), "example.org"));
        assert!(!names(&p("*.example.org"), "badexample.org"));
        assert!(!names(&p("*.example.org"), ".example.org"));
        assert!(!names(&p("192.0.2.1"), "192.0.2.1"));
        let policy = Policy {
            allow: vec![d("192.0.2.1"), d("*.example.org"), d("deb.example.org:443")],
            deny: vec![d("bad.example.org")],
            ..Policy::default()
        };
        assert_eq!(
            verdict(&policy, Some("deb.example.org")),
            Verdict::Allow(vec![0, 1])
        );
        assert_eq!(
            verdict(&policy, Some("x.example.org")),
            Verdict::Allow(vec![0])
        );
        assert_eq!(verdict(&policy, Some("bad.example.org")), Verdict::Refuse);
        assert_eq!(verdict(&policy, Some("example.com")), Verdict::Refuse);
        assert_eq!(verdict(&policy, None), Verdict::Refuse);
    }
}
