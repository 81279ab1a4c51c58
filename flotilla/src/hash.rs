//! One stable hash for the whole crate: names, jitter seeds and fault
//! schedules that must come out the same in every process and release
//! (unlike `std`'s randomly keyed `DefaultHasher`).

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

fn feed(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// 64-bit FNV-1a over `parts`, each followed by a separator byte so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .fold(OFFSET, |h, part| feed(feed(h, part), &[0xff]))
}

/// Plain 64-bit FNV-1a of `bytes` (no separator): the hash the engines'
/// resource names (ECS task-definition families, SQS queue names,
/// Kubernetes Job names) were made with, so those names stay as they are.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    feed(OFFSET, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_separated_and_the_value_is_stable() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_eq!(stable_hash(&[b"run", b"1"]), stable_hash(&[b"run", b"1"]));
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
