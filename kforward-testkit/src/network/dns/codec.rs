//! Sans-I/O DNS message encoding and decoding (RFC 1035): queries, A answers, rcodes.

use std::net::Ipv4Addr;

use crate::network::error::DnsError;

/// Record type A (IPv4 address).
pub const TYPE_A: u16 = 1;
/// Record type AAAA (IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Class IN (Internet).
pub const CLASS_IN: u16 = 1;
/// TTL of every answer, in seconds (CoreDNS in Kubernetes answers with 5 by default).
pub const ANSWER_TTL: u32 = 5;
/// Largest DNS message over UDP without EDNS (RFC 1035 §4.2.1).
pub const MAX_UDP_MESSAGE: usize = 512;

const HEADER_LEN: usize = 12;
/// A compression pointer to offset 12: the question name, right after the header.
const POINTER_TO_QUESTION: [u8; 2] = [0xC0, 0x0C];
/// Bytes of one A answer: pointer, type, class, TTL, RDLENGTH, address.
const A_ANSWER_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
const MAX_LABEL: usize = 63;
const MAX_NAME_WIRE: usize = 255;
/// Pointers followed while reading one name before giving up on a loop.
const MAX_POINTER_JUMPS: usize = 64;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

/// A DNS response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query was malformed.
    FormErr = 1,
    /// The server failed.
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The kind of query is not implemented.
    NotImp = 4,
    /// The server refuses to answer.
    Refused = 5,
}

/// A decoded standard query with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Message ID, echoed in the response.
    pub id: u16,
    /// The OPCODE (0 is a standard query).
    pub opcode: u8,
    /// The RD flag, echoed in the response.
    pub recursion_desired: bool,
    /// The question name as sent (case kept), labels joined by `.`, no trailing dot.
    pub name: String,
    /// The question type ([`TYPE_A`], [`TYPE_AAAA`], ...).
    pub qtype: u16,
    /// The question class ([`CLASS_IN`]).
    pub qclass: u16,
}

/// A decoded response, keeping what a stub resolver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsResponse {
    /// Message ID.
    pub id: u16,
    /// Response code (0 to 15).
    pub rcode: u8,
    /// The TC flag: the answer did not fit and should be asked again over TCP.
    pub truncated: bool,
    /// The question name, if the response repeats the question.
    pub name: Option<String>,
    /// Every IPv4 address of A/IN answers, in order.
    pub addresses: Vec<Ipv4Addr>,
}

/// Lower-cases `name` and drops one trailing dot, the form names are compared in.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn read_u16(msg: &[u8], at: usize, what: &'static str) -> Result<u16, DnsError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Truncated { what })
}

fn malformed(reason: impl Into<String>) -> DnsError {
    DnsError::Malformed {
        reason: reason.into(),
    }
}

/// Reads the name at `at`, following compression pointers when `pointers` is set. Returns
/// the name and the offset just after it (after the first pointer, if any).
fn read_name(msg: &[u8], mut at: usize, pointers: bool) -> Result<(String, usize), DnsError> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    let mut wire_len = 1;
    loop {
        let len = *msg.get(at).ok_or(DnsError::Truncated { what: "name" })?;
        match len {
            0 => break,
            1..=63 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated { what: "label" })?;
                if !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
                    return Err(malformed("label with characters outside printable ASCII"));
                }
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME_WIRE {
                    return Err(malformed("name longer than 255 bytes"));
                }
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + usize::from(len);
            }
            0xC0..=0xFF if pointers => {
                let target = usize::from(read_u16(msg, at, "pointer")? & 0x3FFF);
                jumps += 1;
                if target >= at || jumps > MAX_POINTER_JUMPS {
                    return Err(malformed("compression pointer does not point backwards"));
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(malformed(format!("unsupported label type 0x{len:02x}"))),
        }
    }
    Ok((labels.join("."), end.unwrap_or(at + 1)))
}

/// Appends the wire form of `name` (trailing dot optional; `""` or `"."` is the root).
fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    let invalid = |reason| DnsError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let start = out.len();
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label"));
            }
            if label.len() > MAX_LABEL {
                return Err(invalid("label longer than 63 bytes"));
            }
            if !label.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid("label with characters outside printable ASCII"));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME_WIRE {
        out.truncate(start);
        return Err(invalid("name longer than 255 bytes"));
    }
    Ok(())
}

/// Decodes a query: the header (QR clear, one question) and its question.
///
/// # Errors
///
/// [`DnsError::Truncated`] or [`DnsError::Malformed`] for anything that is not a query with
/// exactly one uncompressed question.
pub fn parse_query(msg: &[u8]) -> Result<Query, DnsError> {
    if msg.len() < HEADER_LEN {
        return Err(DnsError::Truncated { what: "header" });
    }
    let id = read_u16(msg, 0, "id")?;
    let flags = read_u16(msg, 2, "flags")?;
    if flags & FLAG_QR != 0 {
        return Err(malformed("QR is set: this is a response, not a query"));
    }
    let qdcount = read_u16(msg, 4, "qdcount")?;
    if qdcount != 1 {
        return Err(malformed(format!(
            "{qdcount} questions; exactly one is supported"
        )));
    }
    let (name, at) = read_name(msg, HEADER_LEN, false)?;
    Ok(Query {
        id,
        opcode: ((flags >> 11) & 0x0F) as u8,
        recursion_desired: flags & FLAG_RD != 0,
        name,
        qtype: read_u16(msg, at, "qtype")?,
        qclass: read_u16(msg, at + 2, "qclass")?,
    })
}

fn push_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
}

/// Encodes the answer to `query`: the question repeated, then one A record (TTL
/// [`ANSWER_TTL`], name compressed as a pointer to the question) per address. Answers that
/// would make the message longer than `max_len` are left out and TC is set.
///
/// # Errors
///
/// [`DnsError::InvalidName`] when `query.name` cannot be encoded.
pub fn encode_response(
    query: &Query,
    rcode: Rcode,
    answers: &[Ipv4Addr],
    max_len: usize,
) -> Result<Vec<u8>, DnsError> {
    let mut question = Vec::new();
    encode_name(&mut question, &query.name)?;
    question.extend_from_slice(&query.qtype.to_be_bytes());
    question.extend_from_slice(&query.qclass.to_be_bytes());
    let room = max_len.saturating_sub(HEADER_LEN + question.len()) / A_ANSWER_LEN;
    let fitting = answers.len().min(room).min(usize::from(u16::MAX));
    let mut flags = FLAG_QR | (u16::from(query.opcode & 0x0F) << 11) | FLAG_AA | FLAG_RA;
    flags |= u16::from(rcode as u8);
    if query.recursion_desired {
        flags |= FLAG_RD;
    }
    if fitting < answers.len() {
        flags |= FLAG_TC;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + fitting * A_ANSWER_LEN);
    push_header(&mut out, query.id, flags, [1, fitting as u16, 0, 0]);
    out.extend_from_slice(&question);
    for ip in &answers[..fitting] {
        out.extend_from_slice(&POINTER_TO_QUESTION);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Ok(out)
}

/// A header-only answer with `rcode` for a message that could not be decoded, or `None`
/// when it is too short to carry an ID or is itself a response (never answer those).
pub fn encode_error(msg: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let id = read_u16(msg, 0, "id").ok()?;
    let flags = read_u16(msg, 2, "flags").ok()?;
    if flags & FLAG_QR != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN);
    let reply = FLAG_QR | (flags & (0x7800 | FLAG_RD)) | FLAG_RA | u16::from(rcode as u8);
    push_header(&mut out, id, reply, [0; 4]);
    Some(out)
}

/// Encodes a standard query for `name` with RD set.
///
/// # Errors
///
/// [`DnsError::InvalidName`] when `name` cannot be encoded.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    push_header(&mut out, id, FLAG_RD, [1, 0, 0, 0]);
    encode_name(&mut out, name)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// Decodes a response: header, question (if repeated) and the A/IN answers; other records
/// are skipped.
///
/// # Errors
///
/// [`DnsError::Truncated`] or [`DnsError::Malformed`] for a message that is not a
/// well-formed response.
pub fn parse_response(msg: &[u8]) -> Result<DnsResponse, DnsError> {
    if msg.len() < HEADER_LEN {
        return Err(DnsError::Truncated { what: "header" });
    }
    let flags = read_u16(msg, 2, "flags")?;
    if flags & FLAG_QR == 0 {
        return Err(malformed("QR is clear: this is a query, not a response"));
    }
    let qdcount = read_u16(msg, 4, "qdcount")?;
    let ancount = read_u16(msg, 6, "ancount")?;
    let mut at = HEADER_LEN;
    let mut name = None;
    for _ in 0..qdcount {
        let (qname, next) = read_name(msg, at, true)?;
        name.get_or_insert(qname);
        at = next + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..ancount {
        let (_, next) = read_name(msg, at, true)?;
        let rtype = read_u16(msg, next, "type")?;
        let class = read_u16(msg, next + 2, "class")?;
        let rdlen = usize::from(read_u16(msg, next + 8, "rdlength")?);
        let rdata = msg
            .get(next + 10..next + 10 + rdlen)
            .ok_or(DnsError::Truncated { what: "rdata" })?;
        if let (TYPE_A, CLASS_IN, Ok(octets)) = (rtype, class, <[u8; 4]>::try_from(rdata)) {
            addresses.push(Ipv4Addr::from(octets));
        }
        at = next + 10 + rdlen;
    }
    Ok(DnsResponse {
        id: read_u16(msg, 0, "id")?,
        rcode: (flags & 0x000F) as u8,
        truncated: flags & FLAG_TC != 0,
        name,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `web.demo` type A, ID 0x1234, RD set, as a stub resolver sends it.
    const QUERY: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, //
        3, b'w', b'e', b'b', 4, b'd', b'e', b'm', b'o', 0, //
        0, 1, 0, 1,
    ];

    #[test]
    fn parses_a_query() {
        let query = parse_query(QUERY).expect("valid query");
        assert_eq!(
            query,
            Query {
                id: 0x1234,
                opcode: 0,
                recursion_desired: true,
                name: "web.demo".into(),
                qtype: TYPE_A,
                qclass: CLASS_IN,
            }
        );
    }

    #[test]
    fn query_round_trips_through_encode_query() {
        let encoded = encode_query(0x1234, "web.demo.", TYPE_A).expect("valid name");
        assert_eq!(encoded, QUERY);
    }

    #[test]
    fn rejects_bad_queries() {
        assert!(matches!(
            parse_query(&QUERY[..8]),
            Err(DnsError::Truncated { .. })
        ));
        assert!(matches!(
            parse_query(&QUERY[..QUERY.len() - 1]),
            Err(DnsError::Truncated { .. })
        ));
        let mut response = QUERY.to_vec();
        response[2] |= 0x80;
        assert!(parse_query(&response).is_err());
        let mut two = QUERY.to_vec();
        two[5] = 2;
        assert!(parse_query(&two).is_err());
        let mut pointer = QUERY[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(
            parse_query(&pointer).is_err(),
            "no compression in questions"
        );
    }

    #[test]
    fn encodes_answers_with_a_pointer_to_the_question() {
        let query = parse_query(QUERY).expect("valid query");
        let ip = Ipv4Addr::new(127, 130, 0, 7);
        let response =
            encode_response(&query, Rcode::NoError, &[ip], MAX_UDP_MESSAGE).expect("encodable");
        let mut expected = vec![0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        expected.extend_from_slice(&QUERY[12..]);
        expected.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 130, 0, 7]);
        assert_eq!(response, expected);
        let parsed = parse_response(&response).expect("valid response");
        assert_eq!(parsed.addresses, vec![ip]);
        assert_eq!(
            (parsed.id, parsed.rcode, parsed.truncated),
            (0x1234, 0, false)
        );
        assert_eq!(parsed.name.as_deref(), Some("web.demo"));
    }

    #[test]
    fn nxdomain_has_rcode_three_and_no_answers() {
        let query = parse_query(QUERY).expect("valid query");
        let response =
            encode_response(&query, Rcode::NxDomain, &[], MAX_UDP_MESSAGE).expect("encodable");
        assert_eq!(response[3] & 0x0F, 3);
        let parsed = parse_response(&response).expect("valid response");
        assert_eq!((parsed.rcode, parsed.addresses.len()), (3, 0));
    }

    #[test]
    fn too_many_answers_set_tc() {
        let query = parse_query(QUERY).expect("valid query");
        let ips: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(127, 1, 0, i)).collect();
        let response =
            encode_response(&query, Rcode::NoError, &ips, MAX_UDP_MESSAGE).expect("encodable");
        assert!(response.len() <= MAX_UDP_MESSAGE);
        let parsed = parse_response(&response).expect("valid response");
        assert!(parsed.truncated);
        assert_eq!(parsed.addresses, ips[..parsed.addresses.len()]);
        let full = encode_response(&query, Rcode::NoError, &ips, usize::from(u16::MAX))
            .expect("encodable");
        assert_eq!(parse_response(&full).expect("valid").addresses, ips);
    }

    #[test]
    fn error_answer_keeps_id_and_never_answers_responses() {
        let error = encode_error(&[0xAB, 0xCD, 0x01, 0x00, 9, 9], Rcode::FormErr).expect("answer");
        assert_eq!(error, [0xAB, 0xCD, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            encode_error(&[0xAB, 0xCD, 0x81, 0x00], Rcode::FormErr),
            None
        );
        assert_eq!(encode_error(&[0xAB], Rcode::FormErr), None);
    }

    #[test]
    fn rejects_pointer_loops_and_bad_names() {
        let mut looped = vec![0, 1, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        looped.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        looped.extend_from_slice(&[0xC0, 29, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4]);
        assert!(parse_response(&looped).is_err(), "forward pointer");
        for bad in ["a..b", &"x".repeat(64), &vec!["abcdefgh"; 40].join(".")] {
            assert!(encode_query(1, bad, TYPE_A).is_err(), "{bad}");
        }
        assert_eq!(
            encode_query(1, ".", TYPE_A).expect("root")[12..],
            [0, 0, 1, 0, 1]
        );
    }

    #[test]
    fn normalizes_case_and_trailing_dot() {
        assert_eq!(
            normalize_name("Web.Demo.SVC.cluster.local."),
            "web.demo.svc.cluster.local"
        );
    }
}
