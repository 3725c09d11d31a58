//! Helpers the fuzz targets share: cutting one input into the pieces a peer's writes and
//! our reads would make.

use arbitrary::{Result, Unstructured};

/// Cuts `data` into consecutive pieces of sizes drawn from `u` (each at least 1 byte): the
/// reads a stream could return.
pub fn pieces<'a>(u: &mut Unstructured<'_>, data: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = u.int_in_range(1..=rest.len())?;
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    Ok(out)
}

/// Checks that every strict prefix of a complete message is reported incomplete: `decode`
/// says whether its input was taken as "need more bytes". Quadratic, so only for short
/// messages.
pub fn prefixes_need_more(message: &[u8], need_more: impl Fn(&[u8]) -> bool) {
    if message.len() > 512 {
        return;
    }
    for end in 0..message.len() {
        assert!(
            need_more(&message[..end]),
            "a prefix of {end} bytes of a complete {}-byte message was not incomplete",
            message.len()
        );
    }
}
