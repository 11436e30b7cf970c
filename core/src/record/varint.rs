//! Zig-zag variable-length integers, as Kafka encodes the fields of each record in a v2 batch.
//!
//! Kafka uses protobuf-style base-128 varints over zig-zag encoded values, so small negative
//! numbers (such as `-1` for a null key) take one byte.

use super::BatchError;

/// The longest encoding of a 32-bit varint: more bytes than this is malformed input.
const MAX_VARINT_LEN: usize = 5;
/// The longest encoding of a 64-bit varint (a "varlong").
const MAX_VARLONG_LEN: usize = 10;

/// Appends `value` as a zig-zag varint.
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends `value` as a zig-zag varlong.
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// How many bytes [`put_varint`] writes for `value`; used to size a record before writing it.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// How many bytes [`put_varlong`] writes for `value`.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn unsigned_len(v: u64) -> usize {
    // One byte per started group of seven bits; zero still takes a byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varint from the front of `buf`, returning it and the bytes it took.
pub fn get_varint(buf: &[u8]) -> Result<(i32, usize), BatchError> {
    let (raw, len) = get_unsigned(buf, MAX_VARINT_LEN)?;
    if raw > u64::from(u32::MAX) {
        return Err(BatchError::MalformedRecord("varint overflows 32 bits"));
    }
    let raw = raw as u32;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), len))
}

/// Reads a zig-zag varlong from the front of `buf`, returning it and the bytes it took.
pub fn get_varlong(buf: &[u8]) -> Result<(i64, usize), BatchError> {
    let (raw, len) = get_unsigned(buf, MAX_VARLONG_LEN)?;
    Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), len))
}

fn get_unsigned(buf: &[u8], max_len: usize) -> Result<(u64, usize), BatchError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(max_len).enumerate() {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return Err(BatchError::MalformedRecord("varlong overflows 64 bits"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() < max_len {
        Err(BatchError::MalformedRecord(
            "varint runs past the end of the batch",
        ))
    } else {
        Err(BatchError::MalformedRecord(
            "varint is longer than its type allows",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings_match_kafka() {
        // Values and bytes from Kafka's ByteUtilsTest (zig-zag: 0→0, -1→1, 1→2, -64→127, 64→128).
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(get_varint(bytes).unwrap(), (value, bytes.len()));
        }
    }

    #[test]
    fn malformed_varints_are_errors_not_panics() {
        assert!(get_varint(&[]).is_err());
        assert!(get_varint(&[0x80, 0x80]).is_err());
        assert!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        assert!(get_varlong(&[0xff; 11]).is_err());
        assert!(
            get_varlong(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err()
        );
    }

    proptest! {
        #[test]
        fn varint_round_trips(v: i32) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            prop_assert_eq!(get_varint(&out).unwrap(), (v, out.len()));
        }

        #[test]
        fn varlong_round_trips(v: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            prop_assert_eq!(get_varlong(&out).unwrap(), (v, out.len()));
        }
    }
}
