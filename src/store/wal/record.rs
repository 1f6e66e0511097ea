//! WAL record framing.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length, u32 LE
//!      4     8  sequence number, u64 LE (consecutive across the whole log)
//!     12     4  CRC32C over bytes 0..12 and the payload
//!     16     n  payload (a `Mutation`, see store::mutation)
//! ```
//! The CRC covers the length and sequence too, so a flipped length can't make a reader skip
//! to an arbitrary place and accept garbage.

pub const HEADER_LEN: usize = 16;
/// Larger payloads are refused: a length above it is corruption, not a record.
pub const MAX_PAYLOAD: usize = 1 << 30;

pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    encode_with(seq, out, |out| out.extend_from_slice(payload));
}

/// Append a record whose payload `write_payload` appends to `out` in place, so a large
/// payload is not built in a buffer of its own first and then copied. The caller keeps the
/// payload within [`MAX_PAYLOAD`] (`Pipeline::submit` refuses larger ones), so the length
/// field never wraps; a longer one is written with a length `decode` rejects, never a
/// wrapped one that would read as a different record.
pub fn encode_with(seq: u64, out: &mut Vec<u8>, write_payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    write_payload(out);
    let (head, payload) = out[start..].split_at_mut(HEADER_LEN);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    debug_assert!(payload.len() <= MAX_PAYLOAD, "record over the limit");
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..12].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..12]), payload);
    head[12..].copy_from_slice(&crc.to_le_bytes());
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
        total_len: usize,
    },
    /// The buffer ends inside the record.
    Incomplete,
    /// The bytes are not a record.
    Bad(&'static str),
}

/// Decode the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let seq = u64::from_le_bytes([
        head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
    ]);
    let crc = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
    if len > MAX_PAYLOAD {
        return Decoded::Bad("record length out of range");
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&head[..12]), payload) != crc {
        return Decoded::Bad("record checksum mismatch");
    }
    Decoded::Record {
        seq,
        payload,
        total_len: HEADER_LEN + len,
    }
}

/// The sequence number field of a would-be record, without validating it.
pub fn peek_seq(buf: &[u8]) -> Option<u64> {
    let b = buf.get(4..12)?;
    Some(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(7, b"hello", &mut buf);
        encode(8, b"", &mut buf);
        let Decoded::Record {
            seq,
            payload,
            total_len,
        } = decode(&buf)
        else {
            panic!()
        };
        assert_eq!((seq, payload, total_len), (7, &b"hello"[..], 21));
        assert_eq!(
            decode(&buf[21..]),
            Decoded::Record {
                seq: 8,
                payload: b"",
                total_len: 16
            }
        );
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode(1, b"some payload", &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(42, b"payload bytes", &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode(&bad) {
                Decoded::Record { .. } => panic!("bit {bit} flip accepted"),
                Decoded::Incomplete | Decoded::Bad(_) => {}
            }
        }
    }
}
