//! Walking a whole tier file member by member, without inflating: [`read_index`].

use std::io;

use crate::disk::FileHandle;

use super::data_offset_of;
use super::decode::parse_member;
use super::{
    bad, ensure, inconsistent, truncated, BlockHeader, FormatError, Member, Trailer,
    FIXED_HEADER_LEN, GZ_HEADER, TRAILER_HEADER_LEN, TRAILER_MEMBER_LEN, TRAILER_TAIL,
};

/// One member's place in a file, as found by `read_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlock {
    pub offset: u64,
    pub header: BlockHeader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIndex {
    pub blocks: Vec<IndexedBlock>,
    pub trailer: Trailer,
    pub file_len: u64,
}

fn read_at(file: &dyn FileHandle, buf: &mut [u8], offset: u64) -> Result<(), FormatError> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(offset), // the file shrank under us
        _ => FormatError::Io {
            path: None,
            offset,
            source: e,
        },
    })
}

/// Walk a blocked file from offset 0 using positioned reads (each member's fixed 12-byte header,
/// then its extra field, then hop by member_len), without inflating anything. Checks: every
/// member parses, block members precede exactly one trailer member which ends exactly at EOF,
/// trailer totals (blocks, lines, raw_bytes) match the sum over blocks. Errors name the offset.
pub fn read_index(file: &dyn FileHandle) -> Result<FileIndex, FormatError> {
    let io_err = |source| FormatError::Io {
        path: None,
        offset: 0,
        source,
    };
    let file_len = file.size().map_err(io_err)?;
    let mut buf = Vec::with_capacity(1024); // reused: no per-member allocation but timestamps
    let mut blocks = Vec::new();
    let (mut off, mut lines, mut raw_bytes) = (0u64, 0u64, 0u64);
    loop {
        let remaining = file_len.saturating_sub(off);
        ensure!(remaining >= FIXED_HEADER_LEN as u64, truncated(off));
        buf.resize(FIXED_HEADER_LEN, 0);
        read_at(file, &mut buf, off)?;
        let header_len = data_offset_of(&buf).ok_or(truncated(off))? as usize;
        // A foreign header fails in parse_member; do not read a bogus XLEN's worth for it.
        if buf.starts_with(&GZ_HEADER) {
            ensure!(remaining >= header_len as u64, truncated(off));
            buf.resize(header_len, 0);
            let extra_at = off + FIXED_HEADER_LEN as u64;
            read_at(file, &mut buf[FIXED_HEADER_LEN..], extra_at)?;
        }
        match parse_member(&buf, off)?.0 {
            Member::Block(header) => {
                ensure!(remaining >= u64::from(header.member_len), truncated(off));
                lines += u64::from(header.lines);
                raw_bytes += u64::from(header.raw_len);
                let offset = off;
                off += u64::from(header.member_len);
                blocks.push(IndexedBlock { offset, header });
            }
            Member::Trailer(trailer) => {
                ensure!(remaining >= TRAILER_MEMBER_LEN as u64, truncated(off));
                let mut tail = [0u8; TRAILER_TAIL.len()];
                read_at(file, &mut tail, off + TRAILER_HEADER_LEN as u64)?;
                ensure!(tail == TRAILER_TAIL, bad(off, "trailer data is not empty"));
                let end = off + TRAILER_MEMBER_LEN as u64;
                ensure!(end == file_len, inconsistent(end, "data after the trailer"));
                let counted = (blocks.len() as u64, lines, raw_bytes);
                let stated = (u64::from(trailer.blocks), trailer.lines, trailer.raw_bytes);
                let what = || format!("trailer totals {stated:?}, members hold {counted:?}");
                ensure!(stated == counted, inconsistent(off, what()));
                return Ok(FileIndex {
                    blocks,
                    trailer,
                    file_len,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use libdeflater::{CompressionLvl, Compressor};

    use crate::store::tier::format::tests::{build, sample_blocks, temp_file};
    use crate::store::tier::format::{encode_block, encode_trailer};

    #[test]
    fn truncation_at_every_offset_errors() {
        let image = build(&sample_blocks());
        let file = temp_file(b"");
        for len in 0..image.len() {
            file.set_len(0).unwrap();
            file.write_all_at(&image[..len], 0).unwrap();
            let err = read_index(&file).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. }),
                "len {len}: {err}"
            );
            assert!(err.offset().unwrap() <= len as u64);
            let err = err.with_path("/data/t1/ip.txt.gz");
            assert!(
                err.to_string().contains("in /data/t1/ip.txt.gz at offset"),
                "{err}"
            );
        }
        // parse_member needs header + extra; less is Truncated.
        let b = read_index(&temp_file(&image)).unwrap().blocks[2].clone();
        let m = &image[b.offset as usize..];
        let hl = b.header.data_offset as usize;
        for len in 0..hl {
            let err = parse_member(&m[..len], b.offset).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { offset, .. } if offset == b.offset),
                "{err}"
            );
        }
        assert!(parse_member(&m[..hl], b.offset).is_ok());
    }

    #[test]
    fn file_structure_errors() {
        let blocks = sample_blocks();
        let mut c = Compressor::new(CompressionLvl::new(6).unwrap());
        let mut one = Vec::new();
        encode_block(&mut c, 1, &blocks[2].0, &blocks[2].1, &mut one).unwrap();
        let good = Trailer {
            applied_seq: 1,
            generation: 2,
            blocks: 1,
            lines: 7,
            raw_bytes: blocks[2].0.len() as u64,
        };
        let image = |t: Option<Trailer>, extra: &[u8]| {
            let mut v = one.clone();
            if let Some(t) = t {
                encode_trailer(&t, &mut v);
            }
            v.extend_from_slice(extra);
            read_index(&temp_file(&v))
        };
        assert!(image(Some(good), b"").is_ok());
        assert!(matches!(
            image(None, b""),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            image(Some(Trailer { lines: 8, ..good }), b""),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(Trailer { blocks: 0, ..good }), b""),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(
                Some(Trailer {
                    raw_bytes: 1,
                    ..good
                }),
                b""
            ),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(good), &one),
            Err(FormatError::Inconsistent { .. })
        ));
        assert!(matches!(
            image(Some(good), b"\0"),
            Err(FormatError::Inconsistent { .. })
        ));
        let mut second = Vec::new();
        encode_trailer(&good, &mut second);
        assert!(matches!(
            image(Some(good), &second),
            Err(FormatError::Inconsistent { .. })
        ));
        // A plain gzip member in the middle is named by its offset.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"x\n").unwrap();
        let plain = gz.finish().unwrap();
        let mut v = one.clone();
        v.extend_from_slice(&plain);
        encode_trailer(&good, &mut v);
        let err = read_index(&temp_file(&v)).unwrap_err();
        assert!(
            matches!(err, FormatError::BadHeader { offset, .. } if offset == one.len() as u64),
            "{err}"
        );
    }
}
