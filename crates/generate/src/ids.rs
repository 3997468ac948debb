//! Stable, portable identifiers and hashes: nothing here may depend on the platform,
//! the std hasher or the clock, because the same seed must give the same bytes.

use rand::Rng;

/// The id of stream number `index` (0-based): `acc-000001`, `acc-000002`, ...
pub(crate) fn stream_id(index: u32) -> String {
    format!("acc-{:06}", u64::from(index) + 1)
}

/// The partition of a stream: 64-bit FNV-1a of its id, modulo the partition count.
/// Written by hand because `std::hash` makes no stability promise.
pub(crate) fn partition_of(stream_id: &str, partitions: u32) -> u32 {
    (fnv1a64(stream_id.as_bytes()) % u64::from(partitions)) as u32
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// A random-looking but seeded UUID (version 4 layout), `8-4-4-4-12` lowercase hex.
pub(crate) fn event_id(rng: &mut impl Rng) -> String {
    let mut v: u128 = rng.random();
    v = (v & !(0xf << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (v >> 96) as u32,
        (v >> 80) as u16,
        (v >> 64) as u16,
        (v >> 48) as u16,
        v & 0xffff_ffff_ffff
    )
}

/// SplitMix64: a cheap, well-mixed function of one integer (for per-seq jitter).
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn stream_ids_are_zero_padded_and_one_based() {
        assert_eq!(stream_id(0), "acc-000001");
        assert_eq!(stream_id(1_234_566), "acc-1234567");
        assert!(partition_of("acc-000001", 7) < 7);
    }

    #[test]
    fn event_ids_look_like_uuids() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let id = event_id(&mut rng);
        let groups: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "4");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(id, event_id(&mut rng));
    }
}
