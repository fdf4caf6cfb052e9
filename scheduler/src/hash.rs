//! The one stable hash of the project: 64-bit FNV-1a (the `fnv` crate), for seeds, ids and
//! digests that must not change between runs, builds or machines. `std`'s `DefaultHasher` is
//! not that: its algorithm may change between Rust releases.

use std::hash::Hasher as _;

pub use fnv::FnvHasher;

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FnvHasher::default();
    h.write(bytes);
    h.finish()
}

/// FNV-1a of several parts, each followed by a 0xff byte, which no UTF-8 string contains, so
/// ("ab", "c") and ("a", "bc") hash apart.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = FnvHasher::default();
    for part in parts {
        h.write(part);
        h.write(&[0xff]);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashes_are_fnv1a_with_its_published_values() {
        // FNV-1a 64 of "" is the offset basis, of "a" the published 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_eq!(stable_hash(&[b"a"]), fnv1a(b"a\xff"));
    }
}
