//! SPDY/3 header blocks, sans I/O: a `u32` count, then `u32`-length-prefixed names and
//! values, compressed with zlib and the SPDY/3 dictionary as one zlib stream per direction
//! for the whole session, each block ending with a sync flush (SPDY/3 draft, section
//! 2.6.10; `moby/spdystream` `spdy/read.go`, `write.go`).
//!
//! zlib comes from `zlib-rs` (what `flate2` runs on here), used directly because `flate2`
//! cannot set zlib's `memLevel`: at zlib's defaults the compressor of every session would
//! hold about 256 KiB for header blocks of a few dozen bytes, 50 MiB for 200 idle forwards.
//! [`HeaderEncoder`] compresses with a 1 KiB window and `memLevel` 1 (a few KiB); the peer
//! inflates that like any zlib stream. [`HeaderDecoder`] must keep the peer's 32 KiB window
//! and is made on the first block it is given.

use zlib_rs::{
    DeflateConfig, DeflateFlush, Inflate, InflateError, InflateFlush, Method, Status, Strategy,
};

/// The most a decompressed header block may hold: port-forward blocks hold three short
/// headers, and a bigger one is a broken or hostile peer.
pub const MAX_BLOCK: usize = 64 * 1024;
/// The compressor's window (2^10 bytes): header blocks are tiny.
const DEFLATE_WINDOW_BITS: i32 = 10;
/// The compressor's `memLevel`: its hash table and pending buffer, at their smallest.
const DEFLATE_MEM_LEVEL: i32 = 1;
/// The peer's window may be zlib's largest.
const INFLATE_WINDOW_BITS: u8 = 15;

/// The header names and values the SPDY/3 dictionary starts with, each written with a
/// 4-byte big-endian length (SPDY/3 draft, section 2.6.10.1).
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The text the SPDY/3 dictionary ends with, as is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes).
///
/// # Example
///
/// ```
/// let d = kforward_core::transport::spdy::headers::dictionary();
/// assert_eq!(d.len(), 1423);
/// ```
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for w in DICTIONARY_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// A header block that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The compressed bytes are not a valid continuation of the peer's zlib stream.
    #[error("a SPDY header block does not inflate: {0}")]
    Inflate(String),
    /// The block inflates to more than [`MAX_BLOCK`] bytes.
    #[error("a SPDY header block inflates to more than {MAX_BLOCK} bytes")]
    TooLarge,
    /// The inflated block is not a count followed by that many names and values.
    #[error("a SPDY header block is malformed: {0}")]
    Malformed(&'static str),
}

/// Writes `headers` as an uncompressed header block. Names should be lowercase (SPDY/3).
pub fn encode_raw(headers: &[(&str, &str)]) -> Vec<u8> {
    let len = 4 + headers
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    let mut raw = Vec::with_capacity(len);
    raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (n, v) in headers {
        raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
        raw.extend_from_slice(n.as_bytes());
        raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw
}

/// Reads an uncompressed header block into `(name, value)` pairs, names lowercased.
///
/// # Errors
///
/// [`HeaderError::Malformed`] when a length runs past the end.
pub fn parse_raw(raw: &[u8]) -> Result<Vec<(String, String)>, HeaderError> {
    let mut at = 0usize;
    let mut take = |n: usize, what: &'static str| -> Result<&[u8], HeaderError> {
        let end = at.checked_add(n).ok_or(HeaderError::Malformed(what))?;
        let s = raw.get(at..end).ok_or(HeaderError::Malformed(what))?;
        at = end;
        Ok(s)
    };
    let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = len(take(4, "truncated count")?);
    let mut out = Vec::with_capacity(count.min(16));
    for _ in 0..count {
        let n = len(take(4, "truncated name length")?);
        let name = take(n, "truncated name")?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let v = len(take(4, "truncated value length")?);
        let value = String::from_utf8_lossy(take(v, "truncated value")?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// The compressing side of one session direction.
///
/// # Example
///
/// ```
/// use kforward_core::transport::spdy::headers::{HeaderDecoder, HeaderEncoder};
///
/// let (mut tx, mut rx) = (HeaderEncoder::new(), HeaderDecoder::new());
/// let block = tx.encode(&[("streamtype", "data"), ("port", "80")]);
/// let back = rx.decode(&block)?;
/// assert_eq!(back[1], ("port".to_string(), "80".to_string()));
/// # Ok::<(), kforward_core::transport::spdy::headers::HeaderError>(())
/// ```
pub struct HeaderEncoder {
    deflate: zlib_rs::Deflate,
}

impl std::fmt::Debug for HeaderEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderEncoder")
            .field("total_out", &self.deflate.total_out())
            .finish()
    }
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    /// A compressor at the start of a session, primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut deflate = zlib_rs::Deflate::new_with_config(DeflateConfig {
            level: 6,
            method: Method::Deflated,
            window_bits: DEFLATE_WINDOW_BITS,
            mem_level: DEFLATE_MEM_LEVEL,
            strategy: Strategy::Default,
        });
        // Setting a dictionary on a fresh stream with a valid configuration cannot fail;
        // were it to, blocks would still inflate only without it, and the peer would say so.
        let _ = deflate.set_dictionary(&dictionary());
        HeaderEncoder { deflate }
    }

    /// Compresses one header block, continuing the session's zlib stream.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let raw = encode_raw(headers);
        let mut out = vec![0u8; raw.len() + 64];
        let mut used_in = 0usize;
        let mut used_out = 0usize;
        loop {
            let (in0, out0) = (self.deflate.total_in(), self.deflate.total_out());
            let r = self.deflate.compress(
                &raw[used_in..],
                &mut out[used_out..],
                DeflateFlush::SyncFlush,
            );
            used_in += (self.deflate.total_in() - in0) as usize;
            used_out += (self.deflate.total_out() - out0) as usize;
            // Done once all input is taken and the flush did not fill the output (a full
            // output may hold more).
            let done = used_in == raw.len() && used_out < out.len();
            match r {
                Ok(_) if done => break,
                Ok(_) => out.resize(out.len() * 2, 0),
                Err(_) => break,
            }
        }
        out.truncate(used_out);
        out
    }
}

/// The inflating side of one session direction.
#[derive(Default)]
pub struct HeaderDecoder {
    /// Made on the first block: a session that never gets one never pays for the window.
    inflate: Option<Inflate>,
}

impl std::fmt::Debug for HeaderDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecoder")
            .field("started", &self.inflate.is_some())
            .finish()
    }
}

impl HeaderDecoder {
    /// A decompressor at the start of a session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decompresses one header block, continuing the peer's zlib stream.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when the block does not inflate, is too large or is malformed. The
    /// stream is then unusable: the session must end.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, HeaderError> {
        let inflate = self
            .inflate
            .get_or_insert_with(|| Inflate::new(true, INFLATE_WINDOW_BITS));
        let mut raw = vec![0u8; (block.len() * 4).clamp(256, MAX_BLOCK)];
        let mut used_in = 0usize;
        let mut used_out = 0usize;
        loop {
            let (in0, out0) = (inflate.total_in(), inflate.total_out());
            let r = inflate.decompress(
                &block[used_in..],
                &mut raw[used_out..],
                InflateFlush::SyncFlush,
            );
            used_in += (inflate.total_in() - in0) as usize;
            used_out += (inflate.total_out() - out0) as usize;
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(Status::Ok | Status::BufError) if used_out < raw.len() => {
                    if used_in == block.len() {
                        break;
                    }
                    if inflate.total_in() == in0 {
                        return Err(HeaderError::Inflate("no progress".into()));
                    }
                }
                Ok(_) => {
                    if raw.len() >= MAX_BLOCK {
                        return Err(HeaderError::TooLarge);
                    }
                    raw.resize((raw.len() * 2).min(MAX_BLOCK), 0);
                }
                Err(InflateError::NeedDict { .. }) => {
                    inflate
                        .set_dictionary(&dictionary())
                        .map_err(|e| HeaderError::Inflate(format!("{e:?}")))?;
                }
                Err(e) => return Err(HeaderError::Inflate(format!("{e:?}"))),
            }
        }
        parse_raw(&raw[..used_out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(h: &[(&str, &str)]) -> Vec<(String, String)> {
        h.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_one_the_testkit_and_the_spec_use() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
        assert_eq!(
            d,
            kforward_testkit::portforward::spdy::headers::dictionary()
        );
    }

    #[test]
    fn blocks_round_trip_across_one_stateful_stream() {
        let (mut tx, mut rx) = (HeaderEncoder::new(), HeaderDecoder::new());
        for i in 0..200 {
            let id = i.to_string();
            let h = [
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", id.as_str()),
            ];
            let block = tx.encode(&h);
            assert_eq!(rx.decode(&block).expect("decodes"), owned(&h));
        }
        assert_eq!(rx.decode(&tx.encode(&[])).expect("empty"), vec![]);
        // A long value, larger than the window and than the first output guess.
        let long: String = (0..5000)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let h = [("x-long", long.as_str())];
        assert_eq!(rx.decode(&tx.encode(&h)).expect("long"), owned(&h));
    }

    #[test]
    fn our_blocks_inflate_in_the_testkit_and_its_blocks_in_ours() {
        // The testkit's codec is flate2 at zlib's defaults, as the kubelet's Go zlib is: a
        // second implementation in each direction.
        use kforward_testkit::portforward::spdy::headers::HeaderCodec;
        let mut theirs = HeaderCodec::new();
        let (mut tx, mut rx) = (HeaderEncoder::new(), HeaderDecoder::new());
        for i in 0..50 {
            let id = i.to_string();
            let h = [
                ("streamtype", "error"),
                ("port", "7000"),
                ("requestid", id.as_str()),
            ];
            assert_eq!(theirs.decode(&tx.encode(&h)).expect("theirs"), owned(&h));
            assert_eq!(rx.decode(&theirs.encode(&h)).expect("ours"), owned(&h));
        }
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut rx = HeaderDecoder::new();
        assert!(rx.decode(b"not zlib at all").is_err());
        assert_eq!(
            parse_raw(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']),
            Err(HeaderError::Malformed("truncated name"))
        );
        assert_eq!(
            parse_raw(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]),
            Err(HeaderError::Malformed("truncated name"))
        );
        // A bomb: a block that inflates past the limit.
        let mut tx = HeaderEncoder::new();
        let big = "a".repeat(MAX_BLOCK + 10);
        let block = tx.encode(&[("x", big.as_str())]);
        assert_eq!(
            HeaderDecoder::new().decode(&block),
            Err(HeaderError::TooLarge)
        );
    }
}
