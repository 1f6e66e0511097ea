"""Measuring helpers: cold caches, timed reads and appends, statistics, the table."""

import hashlib
import itertools
import math
import mmap
import os
import subprocess
import threading
import time
from benchkit.common import MiB, log
from benchkit.corpus import M32

# ---------------------------------------------------------------------------------------
# Measuring helpers
# ---------------------------------------------------------------------------------------


COLD_METHOD = None


def drop_caches(*paths):
    """Make the next read cold: `sync; echo 3 > /proc/sys/vm/drop_caches` (whole machine,
    needs root); where that is refused, posix_fadvise(DONTNEED) on the given files."""
    global COLD_METHOD
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        COLD_METHOD = "drop_caches"
        return
    except OSError:
        pass
    COLD_METHOD = "posix_fadvise(DONTNEED)"
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


BUF = bytearray(MiB)


def read_all(path, digest=False):
    """Read a whole file in 1 MiB chunks; returns (bytes, seconds[, sha256])."""
    h = hashlib.sha256() if digest else None
    mv = memoryview(BUF)
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    n = 0
    try:
        while True:
            k = os.readv(fd, [BUF])
            if k == 0:
                break
            n += k
            if h:
                h.update(mv[:k])
    finally:
        os.close(fd)
    dt = time.perf_counter() - t
    return (n, dt, h.hexdigest()) if digest else (n, dt)


def timed_cmd(cmd, stdout=subprocess.DEVNULL, shell=False):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, shell=shell)
    dt = time.perf_counter() - t
    if p.returncode not in (0, 1):  # grep/zgrep: 1 = no match
        raise RuntimeError(f"{cmd} exited {p.returncode}: {p.stderr.decode(errors='replace')[-500:]}")
    return dt


def open_read_close_each(paths):
    """Latency (ns, sorted) of open + one read of up to 4 KiB + close of each path."""
    buf = bytearray(4096)
    pc = time.perf_counter_ns
    lat = []
    for path in paths:
        t = pc()
        fd = os.open(path, os.O_RDONLY)
        k = os.readv(fd, [buf])
        os.close(fd)
        lat.append(pc() - t)
        if k <= 0:
            raise RuntimeError(f"empty answer reading {path}")
    lat.sort()
    return lat


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)
    return sorted_vals[k]


def median(v):
    """The median (of an even count, the mean of the two middle samples)."""
    v = sorted(v)
    n = len(v)
    if not n:
        return float("nan")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def span(vals, fmt):
    """'lo–hi unit' of vals, both ends formatted by fmt(x, ref) in the unit of the highest
    (the unit written once when both share it)."""
    top = max(vals)
    lo, hi = fmt(min(vals), top), fmt(top, top)
    a, _, ua = lo.rpartition(" ")
    b, _, ub = hi.rpartition(" ")
    if a and b and ua == ub:
        return f"{a}–{b} {ua}"
    return f"{lo}–{hi}"


def runs(vals, fmt):
    """'5 runs 138.2–152.0 ms': how many samples a median was taken over, and their range."""
    return f"{len(vals)} runs {span(vals, fmt)}"


# The formatters pick their unit and precision from x itself, or from ref when given (so that
# both ends of a range share them: see span).
def fmt_rate(x, unit, ref=None):
    r = x if ref is None else ref
    if x != x:
        return "n/a"
    if r >= 1e6:
        return f"{x / 1e6:.2f} M{unit}"
    if r >= 1e3:
        return f"{x / 1e3:.1f} k{unit}"
    return f"{x:.0f} {unit}"


def fmt_t(s, ref=None):
    r = s if ref is None else ref
    if r >= 1:
        return f"{s:.2f} s"
    if r >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_us(ns, ref=None):
    r = ns if ref is None else ref
    return f"{ns / 1e3:.0f} µs" if r >= 1e4 else f"{ns / 1e3:.1f} µs"


def fmt_ms(ns, ref=None):
    r = ns if ref is None else ref
    return f"{ns / 1e6:.3f} ms" if r < 1e7 else f"{ns / 1e6:.1f} ms"


def mbps(n, s):
    return f"{n / MiB / s:.0f} MiB/s ({fmt_t(s)})"


def mbps_runs(n, samples):
    """n bytes read in each of samples (s): the median rate, its time, the runs' range."""
    m = median(samples)
    return f"{n / MiB / m:.0f} MiB/s ({fmt_t(m)}; {runs(samples, fmt_t)})"


def t_runs(samples):
    """Median time and the runs' range: '1.31 s (3 runs 1.20–1.52 s)'."""
    return f"{fmt_t(median(samples))} ({runs(samples, fmt_t)})"


def chunks_of(seq, k):
    """seq cut into k consecutive chunks of (nearly) equal length."""
    n = len(seq)
    return [seq[i * n // k:(i + 1) * n // k] for i in range(k)]


def pct_cell(runs_, p, q, fmt):
    """Latencies of interleaved runs (one sorted ns list per run): the median over the runs of
    each run's p-th percentile, and a cell 'P (Q); N runs, pP lo–hi' with the median q-th
    percentile in parentheses and the range of the p-th."""
    ps = [pct(r, p) for r in runs_]
    if q is None:
        return median(ps), f"{fmt(median(ps))} ({runs(ps, fmt)})"
    qs = [pct(r, q) for r in runs_]
    return median(ps), f"{fmt(median(ps))} ({fmt(median(qs))}); {len(ps)} runs, p{p} {span(ps, fmt)}"


def open_read_close(path, offsets, size=4096):
    """open + pread(size) + close per offset; returns sorted latencies in ns."""
    lat = []
    buf = bytearray(size)
    pc = time.perf_counter_ns
    for off in offsets:
        t = pc()
        fd = os.open(path, os.O_RDONLY)
        os.preadv(fd, [buf], off)
        os.close(fd)
        lat.append(pc() - t)
    lat.sort()
    return lat


def direct_random_reads(path, offsets):
    """Each read: a fresh fd with O_DIRECT, pread 4 KiB into an aligned buffer, close."""
    buf = mmap.mmap(-1, 4096)
    lat = []
    pc = time.perf_counter_ns
    for off in offsets:
        t = pc()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            k = os.preadv(fd, [buf], off)
        finally:
            os.close(fd)
        lat.append(pc() - t)
        if k <= 0:
            raise RuntimeError(f"short O_DIRECT read of {path} at {off}: {k}")
    lat.sort()
    return lat


def append_loop(path, make_line, seconds, sync=False):
    """One writer: append one line per write() until the deadline (fdatasync after each
    write when sync). Returns (count, elapsed, latencies ns)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lat = []
    pc = time.perf_counter_ns
    i = 0
    t0 = pc()
    end = t0 + int(seconds * 1e9)
    try:
        while True:
            line = make_line(i)
            t = pc()
            os.write(fd, line)
            if sync:
                os.fdatasync(fd)
            e = pc()
            lat.append(e - t)
            i += 1
            if e >= end:
                break
    finally:
        os.close(fd)
    return i, (pc() - t0) / 1e9, lat


def append_line(path, line):
    """One append as a shell's `echo >>` makes it: open, one write, close."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def md5_line(tag):
    return lambda i: (hashlib.md5(f"{tag}-{i}".encode()).hexdigest() + "\n").encode()


IPV4_SLOT = itertools.count()


def ipv4_line():
    """Addresses no other generator gives: g_ipv4's bijection at indices from 2^31 on (the
    corpus uses indices below 2^25), 2^24 of them per call, so that the line counts in
    stats.json can be checked against the appends made."""
    base = (1 << 31) + (next(IPV4_SLOT) % 128 << 24)

    def line(i):
        x = ((base + i) * 2654435761 + 0x1234567) & M32
        return f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}\n".encode()
    return line


# One-line generators per type, for writers spread over several live files.
LINE_OF = {
    "md5": lambda tag: md5_line(tag),
    "sha1": lambda tag: lambda i: (hashlib.sha1(f"{tag}-{i}".encode()).hexdigest() + "\n").encode(),
    "sha256": lambda tag: lambda i: (hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() + "\n").encode(),
    "sha512": lambda tag: lambda i: (hashlib.sha512(f"{tag}-{i}".encode()).hexdigest() + "\n").encode(),
    "url": lambda tag: lambda i: f"http://{tag}.example.net/p/{i}\n".encode(),
    "domain": lambda tag: lambda i: f"w{i}.{tag}.example.org\n".encode(),
    "email": lambda tag: lambda i: f"u{i}@{tag}.example.com\n".encode(),
    "ipv4": lambda tag: ipv4_line(),
    "ipv6": lambda tag: lambda i: f"2001:db8:{hashlib.md5(tag.encode()).hexdigest()[:4]}::{i:x}\n".encode(),
}


def parallel_appends(path, nthreads, seconds, tag, sync=False):
    """nthreads writers; path is one file or a list (writer k appends to path[k]); sync: an
    fdatasync after each write (plain files). Returns (appends, seconds, sorted latencies ns,
    appends of each writer)."""
    res = [None] * nthreads
    errs = []

    def run(k):
        try:
            if isinstance(path, list):
                ty = os.path.basename(path[k])[:-4]
                res[k] = append_loop(path[k], LINE_OF[ty](f"{tag}{k}"), seconds, sync)
            else:
                res[k] = append_loop(path, md5_line(f"{tag}-{k}"), seconds)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(nthreads)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    dt = time.perf_counter() - t
    if errs:
        raise errs[0]
    count = sum(r[0] for r in res)
    lat = sorted(x for r in res for x in r[2])
    return count, dt, lat, [r[0] for r in res]


def status_fields(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
    return out


def memfd_bytes(pid):
    total, n = 0, 0
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, fd)).startswith("/memfd:"):
                total += os.stat(os.path.join(d, fd)).st_size
                n += 1
        except OSError:
            pass
    return total, n


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


class Table:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, metric, iocfs, baseline, ratio, target, ok):
        self.rows.append((metric, iocfs, baseline, ratio, target, ok))
        log(f"ROW {metric}: iocfs {iocfs} | baseline {baseline} | ratio {ratio} | {target} | "
            f"{'PASS' if ok else ('FAIL' if ok is False else '-')}")

    def note(self, s):
        self.notes.append(s)
        log(f"note: {s}")

    def error(self, metrics, e):
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        for m in metrics:
            self.add(m, f"ERROR: {msg}", "—", "—", "—", False)

    def render(self):
        out = ["| metric | iocfs | baseline | ratio | target | pass |", "|---|---|---|---|---|---|"]
        for m, a, b, r, t, ok in self.rows:
            p = "✅" if ok else ("❌" if ok is False else "—")
            out.append(f"| {m} | {a} | {b} | {r} | {t} | {p} |")
        return "\n".join(out)


def ratio_s(x):
    if x != x or x is None:
        return "—"
    return f"{x:.2f}×" if x < 100 else f"{x:.0f}×"
