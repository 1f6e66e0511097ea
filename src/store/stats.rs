//! `.iocfs/stats.json`: what an admin or a monitoring job wants to know, in one object.

use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use crate::clock::rfc3339;
use crate::ioc::IocType;
use crate::store::model::Bucket;
use crate::store::Store;

pub fn stats(store: &Store) -> Value {
    let config = store.config();
    let mut buckets = Map::new();
    let mut total_indicators = 0u64;
    let mut allow = Map::new();
    let (aging, applied_seq, dirty) = {
        let st = store.state();
        for b in Bucket::ALL {
            let mut per_type = Map::new();
            let (mut lines_sum, mut bytes_sum, mut stored_sum) = (0u64, 0u64, 0u64);
            for ty in IocType::ALL {
                let (lines, bytes, stored) = match b.tier() {
                    None => {
                        let v = &st.live(ty).version;
                        (v.lines(), v.len(), v.len())
                    }
                    Some(tier) => {
                        let v = st.tier(tier, ty);
                        (v.lines(), v.size(), v.stored_bytes())
                    }
                };
                lines_sum += lines;
                bytes_sum += bytes;
                stored_sum += stored;
                per_type.insert(
                    ty.name().into(),
                    json!({"lines": lines, "bytes": bytes, "stored_bytes": stored}),
                );
            }
            per_type.insert(
                "total".into(),
                json!({"lines": lines_sum, "bytes": bytes_sum, "stored_bytes": stored_sum}),
            );
            total_indicators += lines_sum;
            buckets.insert(b.name().into(), Value::Object(per_type));
        }
        for ty in IocType::ALL {
            let v = st.allow(ty).version();
            allow.insert(
                ty.name().into(),
                json!({"lines": v.lines(), "bytes": v.len()}),
            );
        }
        let aging = st.last_aging().map(
            |(at, r)| json!({"at": rfc3339(*at), "moved": r.moved, "whole_blocks": r.whole_blocks}),
        );
        (aging, st.applied_seq(), st.changes().dirty_parts().len())
    };
    let cache = store.cache.stats();
    let ahead = store.inflated_ahead();
    let lookups = cache.hits + cache.misses;
    let (wal_bytes, wal_segments) = store.wal_size();
    let mut rejected = Map::new();
    let mut rejected_total = 0;
    for ty in IocType::ALL {
        let n = store.counters.rejected[ty].load(Ordering::Relaxed);
        rejected_total += n;
        rejected.insert(ty.name().into(), n.into());
    }
    rejected.insert("total".into(), rejected_total.into());
    let mut by_reason = Map::new();
    for ty in IocType::ALL {
        let mut reasons = Map::new();
        for (name, n) in crate::ioc::REASONS
            .iter()
            .zip(&store.counters.rejected_by_reason[ty])
        {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                reasons.insert((*name).into(), n.into());
            }
        }
        by_reason.insert(ty.name().into(), Value::Object(reasons));
    }
    let moved_total = crate::sync::lock(&store.counters.aging_moved).clone();
    let commit = store.last_commit().map(|c| {
        json!({"at": rfc3339(c.at), "upto": c.upto, "files": c.files, "bytes": c.bytes, "millis": c.millis})
    });
    let checkpoint = store.last_checkpoint().map(
        |c| json!({"at": rfc3339(c.at), "upto": c.upto, "bytes": c.bytes, "millis": c.millis}),
    );
    let r = &store.recovery;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": rfc3339(store.clock.now()),
        "uptime_secs": store.uptime_secs(),
        "started": rfc3339(store.started_at()),
        "indicators": total_indicators,
        "buckets": buckets,
        "allow": allow,
        "sources": sources(store),
        "cache": {
            "hits": cache.hits,
            "misses": cache.misses,
            "hit_rate": if lookups == 0 { 0.0 } else { cache.hits as f64 / lookups as f64 },
            "bytes": cache.bytes,
            "capacity": cache.capacity,
            "entries": cache.entries,
            "inflated_bytes": store.inflated_bytes(),
            "inflated_ahead": {
                "made": ahead.made.load(Ordering::Relaxed),
                "opened": ahead.opened.load(Ordering::Relaxed),
                "stopped": ahead.stopped.load(Ordering::Relaxed),
            },
        },
        "wal": {
            "applied_seq": applied_seq,
            "next_seq": store.next_seq(),
            "bytes": wal_bytes,
            "segments": wal_segments,
            "mode": config.durability.mode.as_str(),
            "fsync_seconds": store.wal_fsyncs().to_json(),
        },
        "commit": {
            "last": commit,
            "count": store.commits(),
            "lagging_files": dirty,
        },
        "checkpoint": {"last": checkpoint, "count": store.checkpoints()},
        "aging": {"last": aging, "moved_total": moved_total},
        "rejected_lines": rejected,
        "rejected_by_reason": by_reason,
        "recovery": {
            "committed_upto": r.committed_upto,
            "replayed": r.replayed,
            "partitions_from_checkpoint": r.from_checkpoint,
            "millis": r.millis,
            "truncated_tail": r.truncated.as_ref().map(|t| format!("{} at {}: {}", t.0.display(), t.1, t.2)),
        },
        "problems": store.problems(),
    })
}

/// Per source (`local` first): indicators listed, last append and replace (null: never),
/// lines accepted and rejected since the daemon started.
fn sources(store: &Store) -> Value {
    let at = |t: u64| (t > 0).then(|| rfc3339(t));
    let mut out = Map::new();
    for s in store.source_stats() {
        out.insert(
            s.name.clone(),
            json!({
                "listed": s.listed,
                "last_append": at(s.last_append),
                "last_replace": at(s.last_replace),
                "declared": at(s.declared),
                "accepted_lines": s.accepted,
                "rejected_lines": s.rejected,
            }),
        );
    }
    Value::Object(out)
}
