//! The bytes each connection sends: a pseudo-random stream addressed by offset, so the
//! reader computes the byte it expects at any offset without keeping what was sent.
//!
//! Written here rather than taken from `rand`: `rand`'s generators produce a sequence, and
//! filling buffers of different sizes from one of them is not guaranteed to yield the same
//! bytes as filling one large buffer (block generators drop the unused tail of a word); the
//! writer and the reader cut the stream at different places, so they need random access.

/// SplitMix64's finaliser (Steele, Lea, Flood: "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the bytes of stream `seed` from `offset` on.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut word_index = offset / 8;
    let mut word = mix(seed ^ mix(word_index)).to_le_bytes();
    let mut phase = (offset % 8) as usize;
    for b in buf.iter_mut() {
        if phase == 8 {
            word_index += 1;
            word = mix(seed ^ mix(word_index)).to_le_bytes();
            phase = 0;
        }
        *b = word[phase];
        phase += 1;
    }
}

/// How many bytes of `got` differ from stream `seed` at `offset` (`scratch` is reused).
pub fn mismatches(seed: u64, offset: u64, got: &[u8], scratch: &mut Vec<u8>) -> u64 {
    scratch.resize(got.len(), 0);
    fill(seed, offset, scratch);
    got.iter()
        .zip(scratch.iter())
        .filter(|(a, b)| a != b)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_cut_of_the_stream_gives_the_same_bytes() {
        let mut whole = vec![0u8; 1000];
        fill(7, 0, &mut whole);
        let mut parts = vec![0u8; 1000];
        let (a, b) = parts.split_at_mut(13);
        fill(7, 0, a);
        fill(7, 13, b);
        assert_eq!(whole, parts);
        let mut scratch = Vec::new();
        assert_eq!(mismatches(7, 13, &whole[13..], &mut scratch), 0);
        let mut bad = whole.clone();
        bad[500] ^= 1;
        assert_eq!(mismatches(7, 0, &bad, &mut scratch), 1);
        let mut other = vec![0u8; 1000];
        fill(8, 0, &mut other);
        assert_ne!(whole, other);
    }
}
