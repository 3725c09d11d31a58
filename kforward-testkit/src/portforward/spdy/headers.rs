//! SPDY/3 header blocks: `u32` count, then `u32`-length-prefixed names and values,
//! compressed with zlib and the SPDY/3 dictionary, one zlib stream per direction for the
//! whole session (each block ends with a sync flush).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

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
#[error("bad SPDY header block: {0}")]
pub struct HeaderError(pub String);

/// One direction's compressor and the other's decompressor.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    /// A codec at the start of a session.
    pub fn new() -> Self {
        let dict = dictionary();
        let mut deflate = Compress::new(Compression::default(), true);
        // Setting a dictionary on a fresh zlib stream cannot fail.
        let _ = deflate.set_dictionary(&dict);
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
            dict,
        }
    }

    /// Compresses a header block.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            let r = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return out,
                Ok(_) => {}
                Err(_) => return out,
            }
        }
    }

    /// Decompresses a header block into `(name, value)` pairs (names lowercase).
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when the block does not inflate or is malformed.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, HeaderError> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            raw.reserve(1024);
            let before_in = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match r {
                Ok(Status::Ok | Status::BufError)
                    if input.is_empty() && raw.len() < raw.capacity() =>
                {
                    break;
                }
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dict)
                        .map_err(|e| HeaderError(e.to_string()))?;
                }
                Err(e) => return Err(HeaderError(e.to_string())),
            }
        }
        parse_block(&raw)
    }
}

fn parse_block(raw: &[u8]) -> Result<Vec<(String, String)>, HeaderError> {
    let mut at = 0usize;
    let take_u32 = |at: &mut usize| -> Result<usize, HeaderError> {
        let b = raw
            .get(*at..*at + 4)
            .ok_or_else(|| HeaderError("truncated length".into()))?;
        *at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = take_u32(&mut at)?;
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = take_u32(&mut at)?;
        let name = raw
            .get(at..at + n)
            .ok_or_else(|| HeaderError("truncated name".into()))?;
        at += n;
        let v = take_u32(&mut at)?;
        let value = raw
            .get(at..at + v)
            .ok_or_else(|| HeaderError("truncated value".into()))?;
        at += v;
        out.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_has_the_size_the_spec_gives() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
    }

    #[test]
    fn blocks_round_trip_across_one_stateful_stream() {
        let mut a = HeaderCodec::new();
        let mut b = HeaderCodec::new();
        for i in 0..5 {
            let id = i.to_string();
            let block = a.encode(&[("streamtype", "data"), ("port", "8080"), ("requestid", &id)]);
            let back = b.decode(&block).expect("decodes");
            assert_eq!(
                back,
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), "8080".to_string()),
                    ("requestid".to_string(), id.clone())
                ]
            );
        }
        // An empty block, as a SYN_REPLY carries.
        let empty = a.encode(&[]);
        assert_eq!(b.decode(&empty).expect("empty"), vec![]);
    }
}
