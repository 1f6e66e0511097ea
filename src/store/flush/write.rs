//! Writing one partition's new backing file for a commit (see the module above): text
//! (live files, allowlists), tier files (unchanged blocks copied as stored) and provenance.

use super::*;

fn new_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish() | 1
}

/// A provenance file (see `provenance_file`).
pub(super) fn write_provenance(
    store: &dyn Engine,
    tag: &str,
    upto: u64,
    ty: IocType,
    mut file: ProvenanceFile,
) -> Result<Written> {
    let id = PartId::Sources(ty);
    let dir = store.data_dir().join(id.dir());
    let name = id.backing_name();
    let tmp = atomic::temp_path(&dir, &name, tag);
    let part = PartFile {
        applied_seq: upto,
        generation: new_generation(),
    };
    file.applied_seq = part.applied_seq;
    file.generation = part.generation;
    let encoded = file.encode();
    atomic::write_synced(store.disk(), &tmp, |w| w.write_all(&encoded))?;
    Ok(Written {
        id,
        part,
        renames: vec![(tmp, dir.join(name))],
        bytes: encoded.len() as u64,
        tier: None,
        _written_version: None,
        count: 0,
    })
}

/// A live file or an allowlist: the text as is, and its sidecar of line times.
pub(super) fn write_text(
    store: &dyn Engine,
    tag: &str,
    upto: u64,
    id: PartId,
    version: &LiveVersion,
    len: u64,
    times: &[Times],
) -> Result<Written> {
    let dir = store.data_dir().join(id.dir());
    let name = id.backing_name();
    let text_tmp = atomic::temp_path(&dir, &name, tag);
    let mut crc = 0u32;
    atomic::write_synced_dated(store.disk(), &text_tmp, version.mtime(), |w| {
        let mut at = 0u64;
        while at < len {
            let chunk = version
                .read_at(at, (len - at).min(1 << 20) as usize)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if chunk.is_empty() {
                return Err(std::io::Error::other("live content shrank during commit"));
            }
            crc = crc32c::crc32c_append(crc, &chunk);
            w.write_all(&chunk)?;
            at += chunk.len() as u64;
        }
        Ok(())
    })?;
    let part = PartFile {
        applied_seq: upto,
        generation: new_generation(),
    };
    let meta = LiveMeta {
        applied_seq: upto,
        generation: part.generation,
        lines: times.len() as u64,
        text_len: len,
        text_crc: crc,
    };
    let meta_name = live_format::meta_name(&name);
    let meta_tmp = atomic::temp_path(&dir, &meta_name, tag);
    let encoded = live_format::encode(&meta, times);
    if let Err(e) = atomic::write_synced(store.disk(), &meta_tmp, |w| w.write_all(&encoded)) {
        let _ = store.disk().remove_file(&text_tmp);
        return Err(e);
    }
    Ok(Written {
        id,
        part,
        renames: vec![(text_tmp, dir.join(&name)), (meta_tmp, dir.join(meta_name))],
        bytes: len + encoded.len() as u64,
        tier: None,
        _written_version: None,
        count: 0,
    })
}

pub(super) fn write_tier(
    store: &dyn Engine,
    tag: &str,
    upto: u64,
    tier: Tier,
    ty: IocType,
    version: &Arc<TierVersion>,
) -> Result<Written> {
    let bucket = tier.bucket();
    let dir = store.data_dir().join(bucket.name());
    let name = bucket.backing_name(ty);
    let tmp = atomic::temp_path(&dir, &name, tag);
    let generation = new_generation();
    let mut placed = HashMap::with_capacity(version.blocks().len());
    let mut total = 0u64;
    let file = atomic::write_synced_dated(store.disk(), &tmp, version.mtime, |w| {
        let mut compressor = libdeflater::Compressor::new(format::level_for(ty));
        let mut buf = Vec::new();
        let mut lines = 0u64;
        let mut raw_bytes = 0u64;
        for block in version.blocks() {
            buf.clear();
            member_bytes(block, &mut compressor, &mut buf)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let data_offset = format::data_offset_of(&buf).unwrap_or(0);
            placed.insert(block.ident(), (total, buf.len() as u32, data_offset));
            w.write_all(&buf)?;
            total += buf.len() as u64;
            lines += u64::from(block.lines);
            raw_bytes += u64::from(block.raw_len);
        }
        buf.clear();
        format::encode_trailer(
            &format::Trailer {
                applied_seq: upto,
                generation,
                blocks: version.blocks().len() as u32,
                lines,
                raw_bytes,
            },
            &mut buf,
        );
        w.write_all(&buf)?;
        total += buf.len() as u64;
        Ok(())
    })?;
    let tier_file = Arc::new(TierFile {
        id: store.state().new_id(),
        path: dir.join(&name),
        file,
        applied_seq: upto,
        generation,
    });
    Ok(Written {
        id: PartId::Bucket(bucket, ty),
        part: PartFile {
            applied_seq: upto,
            generation,
        },
        renames: vec![(tmp, dir.join(&name))],
        bytes: total,
        tier: Some((tier_file, placed)),
        _written_version: Some(version.clone()),
        count: 0,
    })
}

/// The gzip member of a block: copied as is when it is already stored, compressed otherwise.
pub(super) fn member_bytes(
    block: &Block,
    compressor: &mut libdeflater::Compressor,
    out: &mut Vec<u8>,
) -> Result<()> {
    match &block.data {
        BlockData::Stored {
            file,
            offset,
            member_len,
            ..
        } => {
            out.extend_from_slice(&file.read_member(*offset, *member_len)?);
            Ok(())
        }
        BlockData::Mem { raw, times } => {
            format::encode_block(compressor, block.id, raw, times, out)
                .map_err(|e| Error::Invalid(format!("encode block {}: {e}", block.id)))
        }
    }
}
