//! After a bad record: is there a valid one further on (damage in the middle of the log,
//! refuse to mount) or not (a torn tail, truncate)? Every later offset whose header is
//! plausible (its sequence in range, its length within the limit and the segment) may start
//! one. Checking each candidate's CRC directly costs its length, and candidates overlap, so
//! a crafted segment made that quadratic (hours for 64 MiB). Here one pass computes the
//! CRC32C of every prefix the candidates need, and each candidate's CRC is derived from the
//! two prefixes around its payload: linear in the segment, plus O(log length) per candidate.
//!
//! The algebra (zlib's `crc32_combine`, CRC32C's polynomial): for byte strings A and B,
//! `crc(A‖B) = x^(8|B|)·crc(A) ⊕ crc(B)` modulo the polynomial, so with `P(i)` the CRC of the
//! segment's first `i` bytes, `crc(bytes[a..b]) = P(b) ⊕ x^(8(b−a))·P(a)`.

use super::record::{self, HEADER_LEN, MAX_PAYLOAD};

/// CRC32C's polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;

/// a·b modulo the polynomial (reflected bit order: x^0 is the top bit).
fn mult(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(8n) modulo the polynomial.
fn x8n(mut n: u64) -> u32 {
    // x^(2^k) for k = 3.. (x^8, x^16, …), squared as needed.
    let mut square = mult(1 << 30, 1 << 30); // x^2
    square = mult(square, square); // x^4
    square = mult(square, square); // x^8
    let mut p = 1u32 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = mult(square, p);
        }
        square = mult(square, square);
        n >>= 1;
    }
    p
}

struct Candidate {
    at: usize,
    len: usize,
    stored: u32,
    /// CRC of the header's first 12 bytes.
    head: u32,
    /// CRCs of the prefixes ending where the payload starts and ends.
    before: u32,
    after: u32,
}

/// The offset of the first valid record starting after `bad`, if any.
pub fn find_valid_record_after(bytes: &[u8], bad: usize, next_seq: Option<u64>) -> Option<usize> {
    let plausible = |seq: u64| match next_seq {
        Some(n) => seq >= n && seq - n < (1 << 32),
        None => seq != 0,
    };
    let mut candidates: Vec<Candidate> = (bad + 1..bytes.len().saturating_sub(HEADER_LEN - 1))
        .filter_map(|at| {
            let head = &bytes[at..at + HEADER_LEN];
            if !record::peek_seq(head).is_some_and(plausible) {
                return None;
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > MAX_PAYLOAD || at + HEADER_LEN + len > bytes.len() {
                return None;
            }
            Some(Candidate {
                at,
                len,
                stored: u32::from_le_bytes([head[12], head[13], head[14], head[15]]),
                head: crc32c::crc32c(&head[..12]),
                before: 0,
                after: 0,
            })
        })
        .collect();
    // Every prefix length needed, in order: (position, candidate, payload end?).
    let mut points: Vec<(usize, usize, bool)> = Vec::with_capacity(candidates.len() * 2);
    for (i, c) in candidates.iter().enumerate() {
        points.push((c.at + HEADER_LEN, i, false));
        points.push((c.at + HEADER_LEN + c.len, i, true));
    }
    points.sort_unstable();
    let (mut pos, mut crc) = (0usize, 0u32);
    for (at, i, end) in points {
        crc = crc32c::crc32c_append(crc, &bytes[pos..at]);
        pos = at;
        if end {
            candidates[i].after = crc;
        } else {
            candidates[i].before = crc;
        }
    }
    candidates
        .iter()
        .find(|c| mult(x8n(c.len as u64), c.head ^ c.before) ^ c.after == c.stored)
        .map(|c| c.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_crcs_equal_direct_ones() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for (a, b) in [(0, 0), (0, 1), (3, 17), (100, 4999), (4000, 5000)] {
            let pa = crc32c::crc32c(&data[..a]);
            let pb = crc32c::crc32c(&data[..b]);
            let derived = pb ^ mult(x8n((b - a) as u64), pa);
            assert_eq!(derived, crc32c::crc32c(&data[a..b]), "{a}..{b}");
        }
    }

    #[test]
    fn finds_the_first_valid_record_and_no_false_one() {
        let mut seg = vec![0xAAu8; 100];
        let at = seg.len();
        record::encode(7, b"the payload", &mut seg);
        seg.extend_from_slice(&[0x55; 50]);
        assert_eq!(find_valid_record_after(&seg, 10, Some(5)), Some(at));
        assert_eq!(find_valid_record_after(&seg, at, Some(5)), None);
        assert_eq!(
            find_valid_record_after(&seg, 10, Some(8)),
            None,
            "seq below"
        );
        let n = seg.len();
        seg[n - 60] ^= 1;
        assert_eq!(find_valid_record_after(&seg, 10, Some(5)), None, "damaged");
    }

    /// A segment of overlapping plausible headers, each claiming the rest of the file: the
    /// direct check read ~n²/32 bytes (minutes for 4 MiB); this stays linear.
    #[test]
    fn overlapping_candidates_cost_linear_time() {
        let n = 4 << 20;
        let mut seg = vec![0u8; n];
        for at in (0..n - 16).step_by(16) {
            let len = (n - at - 16) as u32;
            seg[at..at + 4].copy_from_slice(&len.to_le_bytes());
            seg[at + 4..at + 12].copy_from_slice(&9u64.to_le_bytes());
        }
        let started = std::time::Instant::now();
        assert_eq!(find_valid_record_after(&seg, 0, Some(9)), None);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
