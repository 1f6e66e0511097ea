"""Rows of a store's life: aging, recovery after a kill, memory at 10M indicators."""

import json
import os
import re
import shutil
import subprocess
import threading
import time
from benchkit.common import MiB, TIERS, TYPES
from benchkit.corpus import type_counts
from benchkit.measure import (
    drop_caches, fmt_rate, fmt_t, median, memfd_bytes, ratio_s, read_all, runs, status_fields,
    t_runs,
)
from benchkit.procs import Daemon


class LifecycleRows:
    """Methods of `Bench` (scripts/bench.py)."""

    def aging(self):
        """Import N indicators into chaud with a 10-days-old mtime, then time one `age`, in
        interleaved rounds with the baseline (each round ages a copy of the imported data dir
        in a fresh daemon); medians compared."""
        n = 100_000 if self.quick else 1_000_000
        n = min(n, self.n)
        rounds = 2 if self.quick else 3
        src, imported, data = self.p("src-aging"), self.p("data-aging-imported"), self.p("data-aging")
        counts = type_counts(n)
        d = os.path.join(src, "chaud")
        os.makedirs(d)
        mt = time.time() - 10 * 86400
        for ty, c in counts.items():
            with open(self.p("corpus", f"{ty}.txt"), "rb") as f, open(os.path.join(d, f"{ty}.txt"), "wb") as o:
                for _ in range(c):
                    o.write(f.readline())
            os.utime(os.path.join(d, f"{ty}.txt"), (mt, mt))
        self.import_(imported, src)
        cfg = self.cfg("aging.toml", '[aging]\ninterval = "1h"\n')
        # baseline: what a bucket-folder script does to age files: decompress and recompress
        # (the backing files iocfs wrote, before iocfs ages them)
        gzs = [os.path.join(imported, "chaud", f"{ty}.txt.gz") for ty in counts]
        io, base, moved_all, cdts = [], [], [], []
        for _ in range(rounds):
            drop_caches(*gzs)
            t = time.perf_counter()
            subprocess.run(f"for f in {' '.join(gzs)}; do zcat $f | gzip > {self.p('aging-baseline.gz')}; done",
                           shell=True, check=True)
            base.append(time.perf_counter() - t)
            subprocess.run(["cp", "-a", imported, data], check=True)
            dm = Daemon(self.bin, data, self.p("mnt-aging"), cfg, self.p("iocfs-aging.log"))
            dm.start()
            try:
                t = time.perf_counter()
                dm.ctl("age")
                io.append(time.perf_counter() - t)
                st = dm.stats()
                moved_d = st["aging"]["last"]["moved"]
                moved_all.append(sum_moved(moved_d))
                t = time.perf_counter()
                dm.ctl("commit")
                cdts.append(time.perf_counter() - t)
                tiede = st["buckets"]["tiede"]["total"]["lines"]
            finally:
                dm.stop()
            shutil.rmtree(data)
        self.t.note(f"aging: `age` moved {moved_all} ({json.dumps(moved_d)[:200]}; whole blocks "
                    f"{st['aging']['last'].get('whole_blocks')}), tiede then {tiede:,}; the commit that "
                    f"writes the moved data took {', '.join(fmt_t(x) for x in cdts)}")
        if any(m != n for m in moved_all):
            self.t.note(f"WARNING: aging moved {moved_all} of {n}")
        moved = median(moved_all)
        a, b = moved / median(io), n / median(base)
        self.t.add(f"aging {n:,} indicators chaud→tiede (one `age`)",
                   f"{fmt_rate(a, 'ind/s')} ({fmt_t(median(io))}; {runs(io, fmt_t)})",
                   f"{fmt_rate(b, 'ind/s')} ({fmt_t(median(base))}; {runs(base, fmt_t)}) zcat|gzip",
                   ratio_s(a / b), "≥ 2 M ind/s", a >= 2e6)

    def recovery(self):
        n = 100_000 if self.quick else 1_000_000
        data, mnt = self.p("data-recovery"), self.p("mnt-recovery")
        cfg = self.cfg("recovery.toml", '[durability]\nmode = "periodic"\ncommit_interval = "1h"\n'
                                        'checkpoint_interval = "1h"\ncheckpoint_records = 1000000000\n'
                                        '[aging]\ninterval = "1h"\n')
        logf = self.p("iocfs-recovery.log")
        d = Daemon(self.bin, data, mnt, cfg, logf)
        d.start()
        # 4 writers, each on its own live file, one indicator per write(), n/4 lines each
        # (from the big corpus, which has enough of every type)
        tys = ("ipv4", "domain", "url", "sha256")
        share = [n // 4 + (1 if k < n % 4 else 0) for k in range(4)]
        done = [0] * 4
        errs = []

        def writer(k):
            try:
                fd = os.open(os.path.join(mnt, f"live/{tys[k]}.txt"), os.O_WRONLY | os.O_APPEND)
                try:
                    with open(self.p("corpus-big", f"{tys[k]}.txt"), "rb") as f:
                        for line in f:
                            if done[k] >= share[k]:
                                break
                            os.write(fd, line)
                            done[k] += 1
                finally:
                    os.close(fd)
            except Exception as e:  # noqa: BLE001 - re-raised below
                errs.append(e)
        t = time.perf_counter()
        try:
            ths = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            if errs:
                raise errs[0]
            written = sum(done)
            if written != n:
                raise RuntimeError(f"wrote {written} of {n} lines")
            wdt = time.perf_counter() - t
            wal = d.stats()["wal"]
        except BaseException:
            d.stop()
            raise
        time.sleep(0.3)  # let the periodic fsync run (a kill -9 keeps the page cache anyway)
        # The crashed state (nothing committed: the intervals are 1 h) is copied aside, and
        # each round recovers a fresh copy of it, then stops (commit, checkpoint) and starts
        # again: recovery and the clean restart of the same data, interleaved.
        d.kill9()
        crashed = self.p("data-recovery-crashed")
        subprocess.run(["cp", "-a", data, crashed], check=True)
        rounds = 2 if self.quick else 3
        recs, walls, cleans = [], [], []
        got = None
        for i in range(rounds):
            if i > 0:
                shutil.rmtree(data)
                subprocess.run(["cp", "-a", crashed, data], check=True)
            log_size = os.path.getsize(logf)
            walls.append(d.start())
            rec = None
            with open(logf, errors="replace") as f:
                f.seek(log_size)
                for line in f:
                    mm = re.search(r"recovered in (\d+) ms: .*?(\d+) WAL records replayed", line)
                    if mm:
                        rec = (int(mm.group(1)), int(mm.group(2)))
            recs.append(rec)
            if got is None:
                got = d.stats()["indicators"]
            d.stop()
            cleans.append(d.start())
            if i < rounds - 1:
                d.kill9()
            else:
                d.stop()
        self.t.note("recovery samples (daemon's ms, records replayed; wall s; clean restart wall s): "
                    + ", ".join(f"{r} {w:.2f} {c:.2f}" for r, w, c in zip(recs, walls, cleans)))
        self.t.note(f"recovery: 4 writers wrote {written:,} one-line appends in {wdt:.1f} s ({fmt_rate(written / wdt, '/s')}, "
                    f"periodic mode), WAL next_seq {wal['next_seq']}, {wal['bytes'] / MiB:.0f} MiB; after kill -9 "
                    f"the daemon holds {got:,} indicators")
        if any(r is None for r in recs):
            self.t.add(f"recovery, {written:,} WAL records (daemon's figure; wall to ready)",
                       f"log line not found in {sum(r is None for r in recs)} of {rounds} runs; wall {t_runs(walls)}",
                       f"{t_runs(cleans)} clean restart", "—", "≤ 1 s", False)
            return
        secs = [ms / 1e3 for ms, _ in recs]
        replayed = min(r for _, r in recs)
        a, b = median(walls), median(cleans)
        self.t.add(f"recovery of {replayed:,} WAL records: daemon's figure (wall to health ok)",
                   f"{t_runs(secs)}; wall {fmt_t(a)}",
                   f"{t_runs(cleans)} wall, clean restart", ratio_s(b / a), "≤ 1 s",
                   median(secs) <= 1 and replayed >= written)
        if replayed < written:
            self.t.note(f"WARNING: only {replayed} records replayed for {written} writes")

    def memory(self):
        src, data = self.p("src-big"), self.p("data-big")
        placement = {"email": "live", "ipv6": "live", "url": "chaud", "domain": "tiede", "ipv4": "froid",
                     "sha256": "froid"}
        self.layout(src, placement, self.p("corpus-big"))
        text = sum(os.path.getsize(self.p("corpus-big", f"{ty}.txt")) for ty in placement)
        dt = self.import_(data, src)
        # The default `all` view plus two firewall views, as a deployment would have.
        cfg = self.cfg("big.toml", "[views.fw]\ntypes = [\"ipv4\", \"ipv6\", \"domain\", \"url\"]\n"
                       "buckets = [\"live\", \"chaud\"]\nmax_entries = 150000\nformat = \"panos\"\n"
                       "[views.agg]\ntypes = [\"ipv4\"]\naggregate = true\n")
        d = Daemon(self.bin, data, self.p("mnt-big"), cfg, self.p("iocfs-big.log"))
        ready = d.start()
        try:
            idle = status_fields(d.pid)
            # read every file once (fills the block cache as far as it goes), then measure
            for b in ["live"] + TIERS:
                for ty in TYPES:
                    read_all(os.path.join(d.mnt, b, f"{ty}.txt"))
            for view in sorted(os.listdir(os.path.join(d.mnt, "views"))):
                for name in os.listdir(os.path.join(d.mnt, "views", view)):
                    read_all(os.path.join(d.mnt, "views", view, name))
            st = status_fields(d.pid)
            mf, mn = memfd_bytes(d.pid)
            stats = d.stats()
            cache, count = stats["cache"], stats["indicators"]
        finally:
            d.stop()
        rss = st["VmRSS"]
        self.t.note(f"memory: {count:,} indicators ({text / MiB:.0f} MiB of text) imported in {dt:.1f} s, mount ready "
                    f"in {fmt_t(ready)}; VmRSS after mount {idle['VmRSS'] / MiB:.0f} MiB; after reading every file: "
                    f"VmRSS {rss / MiB:.0f} MiB (RssAnon {st.get('RssAnon', 0) / MiB:.0f}, RssFile "
                    f"{st.get('RssFile', 0) / MiB:.0f}, RssShmem {st.get('RssShmem', 0) / MiB:.0f}), VmHWM "
                    f"{st.get('VmHWM', 0) / MiB:.0f} MiB; {mn} memfds holding {mf / MiB:.0f} MiB; block cache "
                    f"{cache['bytes'] / MiB:.0f} of {cache['capacity'] / MiB:.0f} MiB")
        self.t.add(f"daemon VmRSS with {count / 1e6:.0f}M indicators loaded and 3 views, default cache "
                   "(after reading all files; peak in the note)",
                   f"{rss / MiB:.0f} MiB (+ {mf / MiB:.0f} MiB in memfds)", f"{text / MiB:.0f} MiB as plain text",
                   ratio_s(text / rss), "≤ 1024 MiB", rss <= 1024 * MiB)


def sum_moved(moved):
    """stats.json aging.last.moved: a count, or nested {from: {to/type: count}}."""
    if isinstance(moved, (int, float)):
        return int(moved)
    if isinstance(moved, dict):
        return sum(sum_moved(v) for v in moved.values())
    if isinstance(moved, list):
        return sum(sum_moved(v) for v in moved)
    return 0
