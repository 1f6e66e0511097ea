#!/usr/bin/env python3
"""iocfs benchmark suite: measures iocfs against baselines measured in the same run.

Run it through `scripts/bench` (which builds iocfs, installs pigz / fuse3 / ratarmount and
creates the work directory); this program only needs the Python standard library.

Every row of the table is a figure for iocfs next to a baseline measured in the same run on
the same machine, so that noise from other work on the machine hits both. `ratio` is always
"how many times better iocfs is than the baseline" (baseline time / iocfs time, or iocfs
rate / baseline rate; for memory, text size / RSS): above 1 means iocfs wins. Targets are
either on the ratio (`ratio >= X`) or absolute (`p99 <= 0.2 ms`).

Every timed figure is a median over repetitions, never the best sample, and the cell says
over how many and their range, e.g. `408 MiB/s (141.0 ms; 3 runs 138.2–152.0 ms)`. iocfs and
its baseline are measured in interleaved repetitions (iocfs, baseline, iocfs, baseline...)
so that drift in the machine's load hits both; the ratio and the pass/fail decision use the
medians. Rows that need a cold cache or an empty store take a fresh daemon (or a fresh copy
of the data dir) in each repetition: 3 of them in a full run, 2 with --quick. A percentile
row (p50, p99) cuts its requests into interleaved runs and reports the median of the runs'
percentiles, with the range of them. Single samples are left only in the notes (import and
mount-ready times, a warm grep) and in the memory row, which is not a timing.
"""

import argparse
import atexit
import os
import platform
import re
import signal
import subprocess
import sys
import time

# The rest of the program, in scripts/benchkit/ (this file's directory is on the path).
from benchkit import measure, procs
from benchkit.common import log
from benchkit.corpus import type_counts, write_corpus
from benchkit.measure import Table, fmt_rate, fmt_t
from benchkit.procs import Cleanup, Daemon
from benchkit.rows_lifecycle import LifecycleRows
from benchkit.rows_reads import ReadRows
from benchkit.rows_views import ViewRows
from benchkit.rows_writes import WriteRows


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------


class Bench(ReadRows, WriteRows, LifecycleRows, ViewRows):
    def __init__(self, args):
        self.w = args.workdir
        self.bin = args.bin
        self.quick = args.quick
        self.n = args.size or (200_000 if args.quick else 5_000_000)
        self.big_n = 1_000_000 if args.quick else 10_000_000
        if args.size and not args.quick:
            self.big_n = 2 * args.size
        self.big_n = max(self.big_n, self.n)
        self.t = Table()
        self.rat = args.ratarmount if args.ratarmount and os.access(args.ratarmount, os.X_OK) else None
        self.floor = args.floor if args.floor and os.access(args.floor, os.X_OK) else None
        self.default_cfg = os.path.join(self.w, "default.toml")
        with open(self.default_cfg, "w") as f:
            f.write("# built-in defaults (an explicit empty config, so /etc/iocfs/iocfs.toml is not used)\n")
        self.secs = 2.0 if args.quick else 5.0  # duration of each append loop
        self.rows = re.compile(args.rows, re.I) if args.rows else None

    def wanted(self, metrics):
        """Whether a step measuring `metrics` runs (--rows PATTERN selects by row name)."""
        return self.rows is None or any(self.rows.search(m) for m in metrics)

    def p(self, *parts):
        return os.path.join(self.w, *parts)

    def cfg(self, name, text):
        path = self.p(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- machine ---------------------------------------------------------------------
    def machine(self):
        cpu = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = "?"
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", self.w],
                            capture_output=True, text=True).stdout.strip() or "?"
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "?"

        def ver(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                return (r.stdout or r.stderr).strip().splitlines()[0]
            except Exception:  # noqa: BLE001
                return "absent"
        lines = [
            f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {mem}; kernel {platform.release()}",
            f"- data dir: {self.w} on {fs}",
            f"- iocfs {rev}; {ver(['gzip', '--version'])}; {ver(['pigz', '--version'])}; "
            f"ratarmount {ver([self.rat, '--version']).split()[-1] if self.rat else 'absent'}; "
            f"python {platform.python_version()}",
            f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        ]
        return "\n".join(lines)

    # -- setup -----------------------------------------------------------------------
    def make_corpus(self, main, big):
        """The n-indicator corpus (main) and the big one (big: memory and recovery rows), only
        those the selected rows read; both in one pass when both are wanted."""
        if not (main or big):
            return
        t = time.monotonic()
        if main and big:
            log(f"generating corpus: {self.n:,} indicators (and {self.big_n:,} for the memory row)")
            write_corpus(self.p("corpus-big"), self.big_n, self.p("corpus"), self.n)
        elif main:
            log(f"generating corpus: {self.n:,} indicators")
            write_corpus(self.p("corpus"), self.n)
        else:
            log(f"generating corpus: {self.big_n:,} indicators (memory and recovery rows)")
            write_corpus(self.p("corpus-big"), self.big_n)
        dt = time.monotonic() - t
        if not main:
            self.t.note(f"corpus: {self.big_n:,} indicators generated in {dt:.1f} s")
            return
        self.counts = type_counts(self.n)
        self.corpus_bytes = sum(os.path.getsize(self.p("corpus", f"{ty}.txt")) for ty in self.counts)
        self.t.note(f"corpus: {self.n:,} indicators, {self.corpus_bytes / 1e6:.1f} MB "
                    f"({', '.join(f'{ty} {c:,}' for ty, c in self.counts.items())}); generated"
                    f"{f' with the {self.big_n:,}-indicator corpus' if big else ''} in {dt:.1f} s")

    def layout(self, src, placement, corpus):
        """placement: {type: bucket}; mtimes: live now, chaud 3 d, tiede 10 d, froid 60 d."""
        age_days = {"live": 0, "chaud": 3, "tiede": 10, "froid": 60}
        now = time.time()
        for ty, bucket in placement.items():
            d = os.path.join(src, bucket)
            os.makedirs(d, exist_ok=True)
            dst = os.path.join(d, f"{ty}.txt")
            os.link(os.path.join(corpus, f"{ty}.txt"), dst)
            mt = now - age_days[bucket] * 86400 - (600 if bucket == "live" else 0)
            os.utime(dst, (mt, mt))

    def import_(self, data, src, config=None):
        t = time.monotonic()
        cmd = [self.bin, "import", "--data", data, src] + (["--config", config] if config else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"iocfs import failed ({r.returncode}): {r.stderr[-1000:]}")
        invalid = sum(int(x) for x in re.findall(r"(\d+) invalid", r.stdout + r.stderr))
        if invalid:
            raise RuntimeError(f"iocfs import rejected {invalid} generated lines: {(r.stdout + r.stderr)[-1000:]}")
        return time.monotonic() - t

    # -- main data set -----------------------------------------------------------------
    # live: domain, ipv6, email; chaud: url (the big tier file); tiede: ipv4; froid: sha256.
    MAIN = {"domain": "live", "ipv6": "live", "email": "live", "url": "chaud", "ipv4": "tiede",
            "sha256": "froid"}

    def main_set(self):
        src, data = self.p("src-main"), self.p("data-main")
        self.layout(src, self.MAIN, self.p("corpus"))
        dt = self.import_(data, src)
        self.t.note(f"import of the {self.n:,}-indicator corpus (offline `iocfs import`): {dt:.1f} s "
                    f"({fmt_rate(self.n / dt, 'indicators/s')})")
        self.main = Daemon(self.bin, data, self.p("mnt-main"), self.default_cfg, self.p("iocfs-main.log"))
        self.data = data
        return self.main

    def restart_main(self):
        self.main.stop()
        return self.main.start()

    # -- run --------------------------------------------------------------------------
    def run(self):
        """Every step with the names of its rows (their constant part: what --rows is matched
        against, and the rows printed as ERROR when the step fails). A step whose rows are
        not selected costs nothing: no corpus, feed or data set is made for it."""
        machine = self.machine()
        t = self.t
        rounds = 2 if self.quick else 3  # interleaved rounds of the rows that need a fresh daemon each
        feed_n = 300_000 if self.quick else 3_000_000
        main_steps = [
            (["tier cold seq read vs zcat", "tier cold seq read vs pigz -dc",
              "tier cold seq read vs ratarmount first read"], self.tier_cold, rounds),
            (["tier warm seq read vs plain file"], self.tier_warm),
            (["tier cold random 4 KiB O_DIRECT read p50 (vs ratarmount)",
              "tier cold random 4 KiB O_DIRECT read p99 (vs ratarmount)"], self.random_reads, rounds),
            (["live seq read vs plain file", "live open+4 KiB read+close p50 (p99)"], self.live_reads),
            ([".iocfs/lookup stored, open+read+close: p99 (p50)", ".iocfs/lookup absent, stat → ENOENT: p99 (p50)",
              "FUSE round-trip floor: a daemon with no state (examples/fuse_floor), open+read+close of distinct "
              "names: p99 (p50)"],
             self.lookups),
            (["durable appends, always mode, 1 writer (p99) vs raw write+fdatasync",
              "durable appends, always mode, 8 writers on one file (p99) vs raw 1 writer",
              "durable appends, always mode, 8 writers on 8 files (p99) vs raw 1 writer",
              "durable appends, 8 raw writers each on its own plain file (write+fdatasync; p99) vs raw 1 writer"],
             self.appends),
            (["grep -c over all tier files, cold (… MiB) vs zgrep -c on the .gz"], self.grep, rounds),
        ]
        main_steps = [s for s in main_steps if self.wanted(s[0])]
        other_steps = [
            ([self.ingest_name(None)], self.bulk_ingest),
            ([self.ingest_name("ipv4", feed_n)], self.bulk_ingest, "ipv4", feed_n),
            ([self.ingest_name("domain", feed_n)], self.bulk_ingest, "domain", feed_n),
            (["bulk ingest `cat feed >> sources/feed/domain.txt`"], self.sources),
            (["a feed's snapshot `cp` onto sources/feed/ipv4.txt"], self.snapshot),
            (["aging"], self.aging),
            (["recovery"], self.recovery),
            (["view build, … ipv4 entries, plain", "view build, … ipv4 entries, aggregated",
              "view rebuild after a one-line append", "append latency p50 while views rebuild vs the same appends with no rebuild running"],
             self.views),
            (["view rebuild after an allowlist change, … ipv4", "view rebuild after an allowlist change, … domain",
              "lookup/ADDRESS covered by one of … stored networks"], self.allowlist),
            (["nginx serving views"], self.web),
            (["daemon VmRSS"], self.memory),
        ]
        other_steps = [s for s in other_steps if self.wanted(s[0])]
        fns = {s[1] for s in other_steps if len(s) == 2}
        need_main = bool(main_steps) or bool(fns & {self.bulk_ingest, self.sources, self.aging})
        need_big = bool(fns & {self.recovery, self.memory})
        try:
            self.make_corpus(need_main, need_big)
        except Exception as e:  # noqa: BLE001 - every row still printed
            log(f"ERROR generating the corpus: {e}")
            for metrics, *_ in main_steps + other_steps:
                t.error(metrics, RuntimeError(f"corpus: {e}"))
            return machine

        def step(metrics, fn, *args):
            log(f"--- {fn.__name__}{args if args else ''}")
            try:
                fn(*args)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - every row still printed
                log(f"ERROR in {fn.__name__}: {e}")
                t.error(metrics, e)

        try:
            main_err = None
            if main_steps:
                try:
                    self.main_set()
                    dt = self.main.start()
                    t.note(f"main mount ready in {fmt_t(dt)}")
                except Exception as e:  # noqa: BLE001 - every row still printed
                    log(f"ERROR setting up the main data set: {e}")
                    main_err = RuntimeError(f"main data set: {e}")
            for metrics, fn, *args in main_steps:
                if main_err:
                    t.error(metrics, main_err)
                else:
                    step(metrics, fn, *args)
        finally:
            if getattr(self, "main", None) and self.main.proc and self.main.proc.poll() is None:
                try:
                    self.main.stop()
                except Exception as e:  # noqa: BLE001
                    t.note(f"WARNING: stopping the main daemon: {e}")
        for metrics, fn, *args in other_steps:
            step(metrics, fn, *args)
        return machine


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small corpus and feeds, fewer repetitions, never fails on a target (CI)")
    ap.add_argument("--size", type=int, help="corpus size in indicators (default 5,000,000; quick 200,000)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--rows", help="only the rows whose name matches this regular expression")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--bin", required=True, help="the iocfs binary")
    ap.add_argument("--ratarmount", help="the ratarmount executable (row marked unavailable without it)")
    ap.add_argument("--floor", help="examples/fuse_floor, for the FUSE round-trip floor row (none without it)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scripts/bench needs root (FUSE mounts, drop_caches)")
    procs.CLEAN = Cleanup(args.workdir)
    atexit.register(procs.CLEAN.run)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    b = Bench(args)
    started = time.monotonic()
    try:
        machine = b.run()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'SIGINT'}): stopping daemons, unmounting")
        sys.exit(130)  # after the cleanup in `finally`
    finally:
        procs.CLEAN.run()
    took = time.monotonic() - started
    mode = "quick" if args.quick else "full"
    print(f"\n## iocfs benchmark ({mode}: {b.n:,} indicators; took {took / 60:.1f} min)\n")
    print(machine)
    print(f"- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"- cold reads: {measure.COLD_METHOD or 'n/a'} before each cold measurement; ratio = how many times "
          "better iocfs is than the baseline (>1: iocfs better)\n")
    print(b.t.render())
    print("\nNotes:")
    for n in b.t.notes:
        print(f"- {n}")
    failed = [r[0] for r in b.t.rows if r[5] is False]
    targeted = [r for r in b.t.rows if r[5] is not None]
    print(f"\n{len(targeted) - len(failed)} of {len(targeted)} rows with a target pass"
          + (f"; failing: {', '.join(failed)}" if failed else ""))
    errors = [r[0] for r in b.t.rows if str(r[1]).startswith("ERROR")]
    if errors:
        # Something could not be measured at all (iocfs failed to import, mount, answer...):
        # that is a broken build or benchmark, not a missed target, so even --quick fails.
        print(f"{len(errors)} rows could not be measured (ERROR)")
        sys.exit(2)
    if failed and not args.quick:
        sys.exit(1)


if __name__ == "__main__":
    main()
