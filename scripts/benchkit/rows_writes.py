"""Rows that write: durable appends, grep over tiers, bulk ingest, feeds."""

import os
import shutil
import subprocess
import time
from benchkit.common import MiB, TIERS, TYPES
from benchkit.corpus import gen_type, type_counts
from benchkit.measure import (
    append_loop, drop_caches, fmt_ms, fmt_rate, fmt_t, md5_line, median, parallel_appends, pct,
    ratio_s, runs, t_runs, timed_cmd,
)
from benchkit.procs import Daemon


class WriteRows:
    """Methods of `Bench` (scripts/bench.py)."""

    def appends(self):
        """always mode (default config): one line per write(). The raw baseline (write one
        line + fdatasync on a plain file of the data file system), 1 writer on live/md5.txt,
        8 writers on live/md5.txt, 8 writers each on its own live file and 8 raw writers each on
        its own plain file (what the machine's disk gives 8 independent fdatasync loops, the
        same-run reference for the 8-file row) run in interleaved slices (rounds x secs/rounds each), so that drift in the machine's load hits them
        alike; the median of each kind's per-slice rates is compared, p99 is over all slices.
        The line counts in stats.json must grow by the appends acknowledged."""
        m = self.main
        rounds = 4 if self.quick else 5
        slice_s = self.secs / rounds
        live = os.path.join(m.mnt, "live/md5.txt")
        plain = self.p("plain-append.txt")
        tys = ("ipv4", "sha1", "sha256", "sha512", "url", "domain", "email", "ipv6")
        files = [os.path.join(m.mnt, "live", f"{ty}.txt") for ty in tys]
        os.makedirs(self.p("plain-appends"), exist_ok=True)
        plains = [os.path.join(self.p("plain-appends"), f"{ty}.txt") for ty in tys]
        kinds = ("raw", "one", "eight", "spread", "raw8")
        acc = {k: [] for k in kinds}  # per slice: (appends, seconds, latencies)

        def lines():
            live_b = m.stats()["buckets"]["live"]
            return {ty: live_b.get(ty, {}).get("lines", 0) for ty in ("md5",) + tys}
        before = lines()
        for r in range(rounds):
            acc["raw"].append(append_loop(plain, md5_line(f"raw{r}"), slice_s, sync=True))
            acc["one"].append(append_loop(live, md5_line(f"one{r}"), slice_s))
            acc["eight"].append(parallel_appends(live, 8, slice_s, f"eight{r}"))
            acc["spread"].append(parallel_appends(files, 8, slice_s, f"spread{r}"))
            acc["raw8"].append(parallel_appends(plains, 8, slice_s, f"raw8{r}", sync=True))
        after = lines()
        rate = {k: [res[0] / res[1] for res in acc[k]] for k in kinds}
        med = {k: median(rate[k]) for k in kinds}
        lat = {k: sorted(x for res in acc[k] for x in res[2]) for k in kinds}
        p99 = {k: fmt_ms(pct(lat[k], 99)) for k in kinds}
        # lines acknowledged against lines stored
        lost = {}
        md5_acked = sum(res[0] for res in acc["one"] + acc["eight"])
        if after["md5"] - before["md5"] != md5_acked:
            lost["md5"] = md5_acked - (after["md5"] - before["md5"])
        for i, ty in enumerate(tys):
            acked = sum(res[3][i] for res in acc["spread"])
            if after[ty] - before[ty] != acked:
                lost[ty] = acked - (after[ty] - before[ty])
        if lost:
            self.t.note(f"WARNING: acknowledged appends minus lines stored, by live file: {lost}")
        self.t.note(f"durable appends ({rounds} interleaved rounds of {slice_s:g} s each; rates per round, "
                    "appends/s): " + "; ".join(f"{k} {[round(x) for x in rate[k]]}" for k in kinds)
                    + f"; p50 raw {fmt_ms(pct(lat['raw'], 50))}, 1 writer {fmt_ms(pct(lat['one'], 50))}, 8 on one "
                    f"file {fmt_ms(pct(lat['eight'], 50))}, 8 on 8 files {fmt_ms(pct(lat['spread'], 50))}, "
                    f"8 raw on 8 plain files {fmt_ms(pct(lat['raw8'], 50))}")
        self.t.note("durable appends, 8 writers on one file: an info row, not a target. Linux (6.18) "
                    "serializes appending writes to one FUSE file (fuse_dio_wr_exclusive_lock), whatever the "
                    "daemon does; 8 writers on 8 files is the target row")

        def cell(k):
            return f"{fmt_rate(med[k], 'appends/s')} (p99 {p99[k]}; {runs(rate[k], lambda x, ref=None: fmt_rate(x, 'appends/s', ref))})"
        raw = med["raw"]
        self.t.add("durable appends, always mode, 1 writer (p99) vs raw write+fdatasync", cell("one"), cell("raw"),
                   ratio_s(med["one"] / raw), "≥ 0.8×", med["one"] / raw >= 0.8 and "md5" not in lost)
        self.t.add("durable appends, always mode, 8 writers on one file (p99) vs raw 1 writer", cell("eight"),
                   f"{fmt_rate(raw, 'appends/s')} (the raw 1 writer above)", ratio_s(med["eight"] / raw), "info",
                   None)
        self.t.add("durable appends, always mode, 8 writers on 8 files (p99) vs raw 1 writer", cell("spread"),
                   f"{fmt_rate(raw, 'appends/s')} (the raw 1 writer above)", ratio_s(med["spread"] / raw), "≥ 5×",
                   med["spread"] / raw >= 5 and not set(lost) & set(tys))
        self.t.add("durable appends, 8 raw writers each on its own plain file (write+fdatasync; p99) vs raw 1 writer",
                   cell("raw8"), f"{fmt_rate(raw, 'appends/s')} (the raw 1 writer above)",
                   ratio_s(med["raw8"] / raw), "info", None)

    def grep(self, rounds):
        """Cold, `rounds` interleaved rounds (grep through a fresh daemon, then zgrep; caches
        dropped before each), medians compared; then a warm second run of each for the notes."""
        m = self.main
        pat = "kazo"
        files = [os.path.join(m.mnt, b, f"{ty}.txt") for b in TIERS for ty in TYPES]
        gzs = sorted(os.path.join(self.data, b, f) for b in TIERS for f in os.listdir(os.path.join(self.data, b))
                     if f.endswith(".txt.gz"))
        io, zg = [], []

        def count(out):
            return sum(int(x.rsplit(":", 1)[1]) for x in open(out).read().split())
        for _ in range(rounds):
            self.restart_main()
            drop_caches(*gzs)
            with open(self.p("grep.out"), "w") as out:
                io.append(timed_cmd(["grep", "-c", pat] + files, stdout=out))
            drop_caches(*gzs)
            with open(self.p("zgrep.out"), "w") as out:
                zg.append(timed_cmd(["zgrep", "-c", pat] + gzs, stdout=out))
            ca, cb = count(self.p("grep.out")), count(self.p("zgrep.out"))
            if ca != cb:
                raise RuntimeError(f"grep counted {ca} matches through the mount, zgrep {cb} in the backing files")
        # a warm second run of each, for the notes
        with open(self.p("grep.out"), "w") as out:
            a2 = timed_cmd(["grep", "-c", pat] + files, stdout=out)
        with open(self.p("zgrep.out"), "w") as out:
            b2 = timed_cmd(["zgrep", "-c", pat] + gzs, stdout=out)
        tb = sum(os.path.getsize(f) for f in files)
        self.t.note(f"grep '{pat}': {ca} matching lines in {tb / MiB:.0f} MiB of tier data; warm run after the "
                    f"cold ones: grep {fmt_t(a2)}, zgrep {fmt_t(b2)} ({ratio_s(b2 / a2)})")
        a, b = median(io), median(zg)
        self.t.add(f"grep -c over all tier files, cold ({tb / MiB:.0f} MiB) vs zgrep -c on the .gz",
                   t_runs(io), t_runs(zg), ratio_s(b / a), "≥ 5×", b / a >= 5)

    def ingest_name(self, ty, nlines=None):
        """The name of a bulk ingest row (up to its size in MiB, known once the feed exists):
        the corpus's domain file when nlines is None, else the nlines-line feed of ty."""
        if nlines is None:
            return f"bulk ingest `cat feed >> live/domain.txt` ({type_counts(self.n)['domain']:,} lines"
        return f"bulk ingest `cat feed >> live/{ty}.txt`, {nlines:,}-line {ty} feed"

    def feed(self, ty, nlines):
        """WORK/feed-TYPE-N.txt: lines 0..N of the corpus generator of ty (distinct values),
        written once."""
        path = self.p(f"feed-{ty}-{nlines}.txt")
        if not os.path.exists(path):
            t = time.monotonic()
            with open(path + ".tmp", "wb") as f:
                for a in range(0, nlines, 500000):
                    f.write(("\n".join(gen_type(ty, a, min(nlines, a + 500000))) + "\n").encode())
            os.rename(path + ".tmp", path)
            self.t.note(f"{nlines:,}-line {ty} feed generated in {time.monotonic() - t:.1f} s")
        return path

    def bulk_ingest(self, ty=None, nlines=None):
        """`cat feed >> MNT/live/TYPE.txt` into a fresh daemon (fresh data dir, default config,
        always mode), against the same bytes written to a plain file in 1 MiB write()s each
        followed by fdatasync (every write durable, as always mode promises); runs interleaved
        (iocfs, raw, iocfs, raw...), a fresh data dir and daemon for each, medians compared.
        The feed: the corpus's domain file (ty None), or an nlines-line feed of ty. Every run
        must leave exactly the feed's line count in stats.json (no row passes by losing lines)."""
        if ty is None:
            ty, feed, nlines = "domain", self.p("corpus", "domain.txt"), self.counts["domain"]
            name = f"{self.ingest_name(None)}, {os.path.getsize(feed) / MiB:.0f} MiB)"
        else:
            feed = self.feed(ty, nlines)
            name = f"{self.ingest_name(ty, nlines)} ({os.path.getsize(feed) / MiB:.0f} MiB)"
        rounds = 2 if self.quick else 3
        data = open(feed, "rb").read()
        plain = self.p("plain-ingest.txt")
        io, raw = [], []
        for i in range(rounds):
            dd = self.p(f"data-ingest-{ty}")
            d = Daemon(self.bin, dd, self.p("mnt-ingest"), self.default_cfg, self.p(f"iocfs-ingest-{ty}.log"))
            d.start()
            try:
                target = os.path.join(d.mnt, f"live/{ty}.txt")
                io.append(timed_cmd(f"cat '{feed}' >> '{target}'", shell=True))
                got = d.stats()["buckets"]["live"][ty]["lines"]
                if got != nlines:
                    raise RuntimeError(f"ingest run {i + 1} stored {got} of {nlines} lines")
            finally:
                d.stop()
            shutil.rmtree(dd)
            t = time.perf_counter()
            fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for off in range(0, len(data), MiB):
                os.write(fd, data[off:off + MiB])
                os.fdatasync(fd)
            os.close(fd)
            raw.append(time.perf_counter() - t)
            os.unlink(plain)
        a, b = nlines / median(io), nlines / median(raw)
        self.t.add(name, f"{fmt_rate(a, 'lines/s')} ({fmt_t(median(io))}; {runs(io, fmt_t)})",
                   f"{fmt_rate(b, 'lines/s')} ({fmt_t(median(raw))}; {runs(raw, fmt_t)}) raw 1 MiB write+fdatasync",
                   ratio_s(a / b), "≥ 3 M lines/s", a >= 3e6)

    def sources(self):
        """Bulk ingest of the corpus's domain feed through sources/: `cat feed >>` into
        sources/feed/domain.txt and into live/domain.txt, each on a fresh data dir, rounds
        interleaved, medians compared: a source's append is a live append plus its provenance."""
        rounds = 2 if self.quick else 3
        feed = self.p("corpus", "domain.txt")
        nlines = self.counts["domain"]
        times = {"sources": [], "live": []}
        for i in range(rounds):
            for kind in ("live", "sources"):
                tag = f"{kind}{i}"
                d = Daemon(self.bin, self.p(f"data-src-{tag}"), self.p(f"mnt-src-{tag}"), self.default_cfg,
                           self.p(f"iocfs-src-{tag}.log"))
                d.start()
                try:
                    if kind == "sources":
                        os.mkdir(os.path.join(d.mnt, "sources", "feed"))
                        target = os.path.join(d.mnt, "sources/feed/domain.txt")
                    else:
                        target = os.path.join(d.mnt, "live/domain.txt")
                    times[kind].append(timed_cmd(f"cat '{feed}' >> '{target}'", shell=True))
                    st = d.stats()
                    got = st["buckets"]["live"]["domain"]["lines"]
                    if got != nlines:
                        raise RuntimeError(f"{kind} ingest stored {got} of {nlines} lines")
                    if kind == "sources" and st["sources"]["feed"]["listed"] != nlines:
                        raise RuntimeError(f"the source lists {st['sources']['feed']['listed']} of {nlines}")
                finally:
                    d.stop()
                shutil.rmtree(self.p(f"data-src-{tag}"), ignore_errors=True)
        ts, tl = median(times["sources"]), median(times["live"])
        self.t.add(f"bulk ingest `cat feed >> sources/feed/domain.txt` ({nlines:,} lines; median of {rounds}, "
                   f"interleaved)", f"{fmt_rate(nlines / ts, 'lines/s')} ({fmt_t(ts)}; {runs(times['sources'], fmt_t)})",
                   f"{fmt_rate(nlines / tl, 'lines/s')} ({fmt_t(tl)}; {runs(times['live'], fmt_t)}) the same into "
                   "live/domain.txt", ratio_s(tl / ts), "≥ 0.9× live", tl / ts >= 0.9)

    def snapshot(self):
        """A feed's snapshot replacing its list: a source listing N ipv4 lines gets a list of
        N lines of which half are new (so half of the old ones are withdrawn and removed from
        the store), by `cp`; baseline, the same `cp` onto live/ipv4.txt of a store holding the
        old list as live lines (a replace of the same size). Each store is imported once and
        copied for each round; rounds interleaved (sources, live), medians compared."""
        rounds = 2 if self.quick else 3
        n = 200_000 if self.quick else 1_000_000
        old = gen_type("ipv4", 0, n)
        new = old[: n // 2] + gen_type("ipv4", n, n + n // 2)
        src = self.p("src-snapshot")
        os.makedirs(os.path.join(src, "live"), exist_ok=True)
        with open(os.path.join(src, "live", "ipv4.txt"), "w") as f:
            f.write("\n".join(old) + "\n")
        snapshot = self.p("snapshot-ipv4.txt")
        with open(snapshot, "w") as f:
            f.write("\n".join(new) + "\n")
        dt = {"sources": [], "live": []}
        for kind in dt:
            cmd = [self.bin, "import", "--data", self.p(f"data-snap-{kind}-imported"), src] + (
                ["--source", "feed"] if kind == "sources" else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"iocfs import failed ({r.returncode}): {r.stderr[-1000:]}")
        for i in range(rounds):
            for kind in dt:
                data = self.p(f"data-snap-{kind}")
                subprocess.run(["cp", "-a", self.p(f"data-snap-{kind}-imported"), data], check=True)
                d = Daemon(self.bin, data, self.p(f"mnt-snap-{kind}"), self.default_cfg,
                           self.p(f"iocfs-snap-{kind}.log"))
                d.start()
                try:
                    rel = "sources/feed/ipv4.txt" if kind == "sources" else "live/ipv4.txt"
                    dt[kind].append(timed_cmd(["cp", snapshot, os.path.join(d.mnt, rel)]))
                    st = d.stats()
                    got = st["buckets"]["live"]["ipv4"]["lines"]
                    if got != len(new):
                        raise RuntimeError(f"after the {kind} snapshot live holds {got} of {len(new)} lines")
                    if kind == "sources" and st["sources"]["feed"]["listed"] != len(new):
                        raise RuntimeError(f"the source lists {st['sources']['feed']['listed']} of {len(new)}")
                finally:
                    d.stop()
                shutil.rmtree(data)
        a, b = median(dt["sources"]), median(dt["live"])
        self.t.add(f"a feed's snapshot `cp` onto sources/feed/ipv4.txt: {n:,} lines, half of them new "
                   f"({n // 2:,} withdrawn and removed)", t_runs(dt["sources"]),
                   f"{t_runs(dt['live'])} the same cp onto live/ipv4.txt", ratio_s(b / a), "≤ 2 s", a <= 2.0)
