//! Reading one member: its header ([`parse_member`]), its data ([`decode_block`]), and
//! what kind of file a few first bytes belong to ([`probe_kind`]).

use libdeflater::Decompressor;

use super::{
    bad, check_crc, corrupt, ensure, max_member_len, truncated, BlockHeader, FormatError, Kind,
    Member, Trailer, FEXTRA, FIXED_HEADER_LEN, GZ_HEADER, GZ_TAIL_LEN, MAX_BLOCK_LINES,
    MAX_RAW_LEN, MIN_DEFLATE_LEN, SUBFIELD_HEADER_LEN, VERSION,
};

/// Bounds-checked little-endian reader over an extra-field payload.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = *self.buf.get(self.pos..)?.first_chunk::<N>()?;
        self.pos += N;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    /// LEB128 u32; rejects encodings longer than 5 bytes or exceeding u32.
    fn varint(&mut self) -> Option<u32> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.u8()?;
            if i == 4 && b > 0x0f {
                return None;
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

/// Parse the member that starts at `buf[0]` (which is at absolute file offset `offset`, used in
/// errors). Needs only the gzip header + extra field; returns the member and the header length
/// (12 + XLEN). `buf` may be shorter than the member; Err(Truncated) if it is shorter than the
/// header+extra.
pub fn parse_member(buf: &[u8], offset: u64) -> Result<(Member, usize), FormatError> {
    let (gz, _) = buf
        .first_chunk::<FIXED_HEADER_LEN>()
        .ok_or(truncated(offset))?
        .split_at(10);
    ensure!(
        gz == GZ_HEADER,
        bad(offset, "not a tier member's gzip header")
    );
    let header_len = data_offset_of(buf).ok_or(truncated(offset))? as usize;
    let extra = buf
        .get(FIXED_HEADER_LEN..header_len)
        .ok_or(truncated(offset))?;
    let Some((&[si1, si2, l0, l1], payload)) = extra.split_first_chunk::<SUBFIELD_HEADER_LEN>()
    else {
        return Err(bad(offset, "extra field shorter than a subfield header"));
    };
    let one_subfield = usize::from(u16::from_le_bytes([l0, l1])) == payload.len();
    ensure!(
        one_subfield,
        bad(offset, "extra field is not exactly one subfield")
    );
    let (body, crc) = payload
        .split_last_chunk::<4>()
        .ok_or_else(|| bad(offset, "no crc32c"))?;
    let crc = u32::from_le_bytes(*crc);
    check_crc(offset, "extra-field crc32c", crc, crc32c::crc32c(body))?;

    let mut cur = Cursor { buf: body, pos: 0 };
    let short = || bad(offset, "payload too short");
    let (version, flags) = (cur.u8().ok_or_else(short)?, cur.u8().ok_or_else(short)?);
    let what = || format!("unsupported version {version} / flags {flags:#x}");
    ensure!(version == VERSION && flags == 0, bad(offset, what()));
    let member = match [si1, si2] {
        [b'I', b'B'] => Member::Block(parse_block(&mut cur, header_len, offset)?),
        [b'I', b'T'] => Member::Trailer(Trailer {
            applied_seq: cur.u64().ok_or_else(short)?,
            generation: cur.u64().ok_or_else(short)?,
            blocks: cur.u32().ok_or_else(short)?,
            lines: cur.u64().ok_or_else(short)?,
            raw_bytes: cur.u64().ok_or_else(short)?,
        }),
        _ => return Err(bad(offset, "unknown subfield ID")),
    };
    ensure!(
        cur.pos == body.len(),
        bad(offset, "trailing bytes in payload")
    );
    Ok((member, header_len))
}

/// Rest of a block payload after version/flags; checks that the fields agree with each other.
fn parse_block(
    cur: &mut Cursor<'_>,
    header_len: usize,
    offset: u64,
) -> Result<BlockHeader, FormatError> {
    let mut field = || {
        cur.u32()
            .ok_or_else(|| bad(offset, "block payload too short"))
    };
    let (block_id, lines, raw_len) = (field()?, field()?, field()?);
    let (member_len, base_first, base_last) = (field()?, field()?, field()?);
    let what = || format!("{lines} lines, {raw_len} bytes, member_len {member_len}");
    let fits = (member_len as usize) >= header_len + MIN_DEFLATE_LEN + GZ_TAIL_LEN
        && u64::from(member_len) <= max_member_len(raw_len);
    let ok = lines as usize <= MAX_BLOCK_LINES
        && raw_len >= lines
        && raw_len <= MAX_RAW_LEN
        && (lines == 0) == (raw_len == 0);
    ensure!(ok && fits, bad(offset, what()));

    let bad_ts = || bad(offset, "bad timestamp varint");
    let mut timestamps = Vec::with_capacity(lines as usize);
    let (mut min_first, mut min_last) = (u32::MAX, u32::MAX);
    for _ in 0..lines {
        let (df, dl) = (
            cur.varint().ok_or_else(bad_ts)?,
            cur.varint().ok_or_else(bad_ts)?,
        );
        (min_first, min_last) = (min_first.min(df), min_last.min(dl));
        let first = base_first.checked_add(df).ok_or_else(bad_ts)?;
        timestamps.push((first, base_last.checked_add(dl).ok_or_else(bad_ts)?));
    }
    let bases_are_min = lines == 0 || (min_first == 0 && min_last == 0);
    ensure!(
        bases_are_min,
        bad(offset, "timestamp bases are not the minimum")
    );
    let data_offset = header_len as u32; // ≤ 12 + 65535
    Ok(BlockHeader {
        block_id,
        lines,
        raw_len,
        member_len,
        data_offset,
        timestamps,
    })
}

/// Where the DEFLATE data of a member starts (12 + XLEN), from its first 12 bytes.
pub fn data_offset_of(member: &[u8]) -> Option<u32> {
    let x = member.get(10..12)?;
    Some(FIXED_HEADER_LEN as u32 + u32::from(u16::from_le_bytes([x[0], x[1]])))
}

/// Inflate a whole block member (`member` = exactly member_len bytes) into `out` (cleared first,
/// resized to raw_len), verifying gzip CRC32 and ISIZE against the header. On error `out` is
/// left empty, so wrong bytes are never handed out.
pub fn decode_block(
    d: &mut Decompressor,
    member: &[u8],
    header: &BlockHeader,
    offset: u64,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.clear();
    out.resize(header.raw_len as usize, 0);
    let result = decode_block_into(d, member, header, offset, out);
    if result.is_err() {
        out.clear();
    }
    result
}

/// [`decode_block`] into `out`, exactly raw_len bytes long (a slice of a larger buffer).
/// On error what `out` holds is unspecified: the caller must not hand it out.
pub fn decode_block_into(
    d: &mut Decompressor,
    member: &[u8],
    header: &BlockHeader,
    offset: u64,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let len = header.member_len as usize;
    ensure!(member.len() >= len, truncated(offset));
    ensure!(
        member.len() == len,
        bad(offset, "member longer than member_len")
    );
    // Cheap guard against reading the wrong offset; the full header was parsed by the caller.
    let same = member.starts_with(&GZ_HEADER) && data_offset_of(member) == Some(header.data_offset);
    ensure!(same, bad(offset, "member does not match its block header"));
    let (rest, &[c0, c1, c2, c3, s0, s1, s2, s3]) =
        member.split_last_chunk().ok_or(truncated(offset))?;
    let data = rest
        .get(header.data_offset as usize..)
        .ok_or(truncated(offset))?;
    let (crc, isize) = (
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([s0, s1, s2, s3]),
    );
    let raw_len = header.raw_len;
    ensure!(
        isize == raw_len,
        corrupt(offset, format_args!("ISIZE {isize} but raw_len {raw_len}"))
    );
    ensure!(
        out.len() == raw_len as usize,
        bad(offset, "output is not raw_len bytes")
    );
    match d.deflate_decompress(data, out) {
        Ok(n) if n == out.len() => check_crc(offset, "gzip CRC32", crc, libdeflater::crc32(out)),
        Ok(n) => Err(corrupt(
            offset,
            format_args!("inflated {n} bytes, raw_len {raw_len}"),
        )),
        Err(e) => Err(corrupt(offset, format_args!("inflate failed: {e}"))),
    }
}

/// Look at the first bytes of a file (at least [`PROBE_LEN`](super::PROBE_LEN) of them, or the
/// whole file if shorter): `Blocked` if its first member carries an `IB`/`IT` subfield.
pub fn probe_kind(first_bytes: &[u8]) -> Kind {
    if first_bytes.is_empty() {
        return Kind::Empty;
    }
    if !first_bytes.starts_with(&[0x1f, 0x8b, 0x08]) {
        return Kind::NotGzip;
    }
    let (Some(flg), Some(&[x0, x1])) = (first_bytes.get(3), first_bytes.get(10..12)) else {
        return Kind::PlainGzip;
    };
    if flg & FEXTRA == 0 {
        return Kind::PlainGzip;
    }
    // Walk the subfields that are both inside XLEN and inside the bytes we were given.
    let end = first_bytes
        .len()
        .min(FIXED_HEADER_LEN + usize::from(u16::from_le_bytes([x0, x1])));
    let mut rest = first_bytes.get(FIXED_HEADER_LEN..end).unwrap_or(&[]);
    while let Some((&[si1, si2, l0, l1], payload)) = rest.split_first_chunk::<4>() {
        if si1 == b'I' && (si2 == b'B' || si2 == b'T') {
            return Kind::Blocked;
        }
        rest = payload
            .get(usize::from(u16::from_le_bytes([l0, l1]))..)
            .unwrap_or(&[]);
    }
    Kind::PlainGzip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::FileHandle;

    use libdeflater::Compressor;

    use crate::store::tier::format::encode::put_varint;
    use crate::store::tier::format::tests::{build, member, sample_blocks, temp_file, Rng};
    use crate::store::tier::format::{
        encode_block, encode_trailer, read_index, PROBE_LEN, TRAILER_MEMBER_LEN,
    };

    /// Flip every bit of each block's DEFLATE data and gzip tail: decoding must fail, except
    /// for flips of unused padding bits, which must still give exactly the original bytes.
    #[test]
    fn data_bit_flips_never_yield_wrong_bytes() {
        let blocks = sample_blocks();
        let image = build(&blocks);
        let index = read_index(&temp_file(&image)).unwrap();
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        for (b, (raw, _)) in index.blocks.iter().zip(&blocks) {
            let m = member(&image, b);
            let mut harmless = 0;
            for bit in b.header.data_offset as usize * 8..m.len() * 8 {
                let mut bad = m.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                match decode_block(&mut d, &bad, &b.header, b.offset, &mut out) {
                    Ok(()) => {
                        assert_eq!(&out, raw, "bit {bit} gave wrong bytes");
                        assert!(
                            bit < (m.len() - GZ_TAIL_LEN) * 8,
                            "gzip tail bit {bit} not checked"
                        );
                        harmless += 1;
                    }
                    Err(e) => {
                        assert!(out.is_empty());
                        assert_eq!(e.offset(), Some(b.offset));
                    }
                }
            }
            // Padding bits only: at most the stored-block header padding plus the final byte.
            assert!(
                harmless <= 12,
                "{harmless} undetected flips in block {}",
                b.header.block_id
            );
        }
    }

    /// The header and extra field are fully fixed or crc32c-protected: any flip is caught by
    /// `parse_member`, and by `read_index`.
    #[test]
    fn header_bit_flips_detected() {
        let image = build(&sample_blocks());
        let index = read_index(&temp_file(&image)).unwrap();
        let trailer_at = image.len() - TRAILER_MEMBER_LEN;
        let mut ranges: Vec<(usize, usize)> = index
            .blocks
            .iter()
            .map(|b| (b.offset as usize, b.header.data_offset as usize))
            .collect();
        ranges.push((trailer_at, TRAILER_MEMBER_LEN - 10));
        let file = temp_file(b"");
        for (start, header_len) in ranges {
            for bit in 0..header_len * 8 {
                let mut bad = image.clone();
                bad[start + bit / 8] ^= 1 << (bit % 8);
                // A flip in XLEN or member_len may move the parse elsewhere; it must still fail.
                if let Ok((m, _)) = parse_member(&bad[start..], start as u64) {
                    panic!("flip of bit {bit} at member {start} parsed as {m:?}");
                }
                file.set_len(0).unwrap();
                file.write_all_at(&bad, 0).unwrap();
                let err = read_index(&file).unwrap_err();
                assert!(err.to_string().contains("offset"), "{err}");
            }
        }
    }

    #[test]
    fn varint_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            (1 << 28) - 1,
            1 << 28,
            u32::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert!(buf.len() <= 5);
            let mut cur = Cursor { buf: &buf, pos: 0 };
            assert_eq!(cur.varint(), Some(v));
            assert_eq!(cur.pos, buf.len());
        }
        // Overflowing u32, over-long and cut-short encodings are rejected.
        for bad in [
            &[0xff, 0xff, 0xff, 0xff, 0x10][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0x80],
        ] {
            assert_eq!(Cursor { buf: bad, pos: 0 }.varint(), None);
        }
        // Full-range deltas through a block header.
        let ts = vec![(0, u32::MAX), (u32::MAX, 0), (0, 0), (u32::MAX, u32::MAX)];
        let mut out = Vec::new();
        encode_block(
            &mut Compressor::default(),
            0,
            b"1\n2\n3\n4\n",
            &ts,
            &mut out,
        )
        .unwrap();
        let (Member::Block(h), _) = parse_member(&out, 0).unwrap() else {
            panic!()
        };
        assert_eq!(h.timestamps, ts);
    }

    #[test]
    fn probe() {
        let image = build(&sample_blocks());
        assert_eq!(probe_kind(&image[..PROBE_LEN]), Kind::Blocked);
        assert_eq!(probe_kind(&image), Kind::Blocked);
        let mut trailer_only = Vec::new();
        encode_trailer(
            &Trailer {
                applied_seq: 0,
                generation: 0,
                blocks: 0,
                lines: 0,
                raw_bytes: 0,
            },
            &mut trailer_only,
        );
        assert_eq!(probe_kind(&trailer_only), Kind::Blocked);
        assert!(read_index(&temp_file(&trailer_only))
            .unwrap()
            .blocks
            .is_empty());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"1.2.3.4\nexample.com\n").unwrap();
        let plain = gz.finish().unwrap();
        assert_eq!(probe_kind(&plain), Kind::PlainGzip);
        assert_eq!(probe_kind(&plain[..PROBE_LEN]), Kind::PlainGzip);
        // A gzip with an unrelated extra subfield (BGZF-like) is still plain.
        let mut bgzf = plain.clone();
        bgzf[3] |= FEXTRA;
        bgzf.splice(10..10, [6, 0, b'B', b'C', 2, 0, 0, 0]);
        assert_eq!(probe_kind(&bgzf), Kind::PlainGzip);
        let mut rng = Rng(99);
        let random: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
        assert_eq!(probe_kind(&random), Kind::NotGzip);
        assert_eq!(probe_kind(&[0x1f]), Kind::NotGzip);
        assert_eq!(probe_kind(&[]), Kind::Empty);
        assert!(read_index(&temp_file(&plain)).is_err());
    }
}
