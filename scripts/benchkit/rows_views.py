"""Rows of the views: builds, the allowlist, a web server serving them."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from benchkit import procs
from benchkit.common import SEED
from benchkit.corpus import gen_type
from benchkit.measure import (
    append_line, chunks_of, fmt_ms, fmt_rate, md5_line, median, open_read_close_each, pct,
    pct_cell, ratio_s, runs, t_runs, timed_cmd,
)
from benchkit.procs import Daemon, wait_for


class ViewRows:
    """Methods of `Bench` (scripts/bench.py)."""

    def views(self):
        """View builds over a 1M-indicator store: a plain and an aggregated ipv4 view of 1M
        entries (time from the daemon's own build figure, next to `sort -u` of the same lines),
        builds and `sort -u` interleaved, medians compared), the delay from a one-line append
        to the view serving it, and the latency of appends made while a rebuild runs against
        the same appends with none running (the build runs off the write path), medians over
        the appends."""
        n = 100_000 if self.quick else 1_000_000
        src, data = self.p("src-views"), self.p("data-views")
        lines = gen_type("ipv4", 0, n)
        os.makedirs(os.path.join(src, "live"), exist_ok=True)
        feed = os.path.join(src, "live", "ipv4.txt")
        with open(feed, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.import_(data, src)
        cfg = self.cfg("views.toml", "[views]\nrefresh = \"0s\"\n"
                       "[views.all]\ntypes = [\"ipv4\"]\n"
                       "[views.agg]\ntypes = [\"ipv4\"]\naggregate = true\n")
        d = Daemon(self.bin, data, self.p("mnt-views"), cfg, self.p("iocfs-views.log"))
        d.start()
        try:
            builds = {"all": [], "agg": []}
            base = []  # baseline: what a script would do with the same lines
            for _ in range(3 if self.quick else 5):
                d.ctl("refresh-views")
                v = d.stats()["views"]
                for name in builds:
                    builds[name].append(v[name]["ipv4"]["last_build"]["millis"] / 1000)
                base.append(timed_cmd(f"LC_ALL=C sort -u '{feed}' > /dev/null", shell=True))
            entries = d.stats()["views"]["all"]["ipv4"]["entries"]
            b = median(base)
            for name, what in (("all", "plain"), ("agg", "aggregated")):
                t_ = median(builds[name])
                self.t.add(f"view build, {entries:,} ipv4 entries, {what} (median of {len(builds[name])})",
                           t_runs(builds[name]), f"{t_runs(base)} `sort -u` of the same lines", ratio_s(b / t_),
                           "≤ 0.3 s", t_ <= 0.3)
            # one-line append -> served by the view
            view = os.path.join(d.mnt, "views/all/ipv4.txt")
            agg = os.path.join(d.mnt, "views/agg/ipv4.txt")

            def changed(path, before):
                st = os.stat(path)
                return (st.st_ino, st.st_size) != (before.st_ino, before.st_size)
            delays = []
            for k in range(10 if self.quick else 20):
                before = os.stat(view)
                t = time.perf_counter()
                append_line(os.path.join(d.mnt, "live/ipv4.txt"), f"5.0.{k // 250}.{k % 250 + 1}\n".encode())
                while not changed(view, before):
                    if time.perf_counter() - t > 30:
                        raise RuntimeError("the view did not pick up an append within 30 s")
                    time.sleep(0.0005)
                delays.append(time.perf_counter() - t)
            # Append latency while a rebuild runs (appends to a type no view reads, back to back
            # from the append that started it until both views serve it), against the same
            # appends, back to back for 50 ms, once the rebuild has published (a quarter second
            # later).
            lat_rebuild, lat_quiet = [], []
            md5_path = os.path.join(d.mnt, "live/md5.txt")
            for k in range(5 if self.quick else 10):
                before, before_agg = os.stat(view), os.stat(agg)
                t = time.perf_counter()
                append_line(os.path.join(d.mnt, "live/ipv4.txt"), f"5.1.{k // 250}.{k % 250 + 1}\n".encode())
                i = 0
                while not (changed(view, before) and changed(agg, before_agg)):
                    if time.perf_counter() - t > 30:
                        raise RuntimeError("the views did not pick up an append within 30 s")
                    t1 = time.perf_counter()
                    append_line(md5_path, md5_line(f"r{k}")(i))
                    lat_rebuild.append(time.perf_counter() - t1)
                    i += 1
                time.sleep(0.25)
                quiet_end = time.perf_counter() + 0.05
                j = 0
                while time.perf_counter() < quiet_end:
                    t1 = time.perf_counter()
                    append_line(md5_path, md5_line(f"q{k}")(j))
                    lat_quiet.append(time.perf_counter() - t1)
                    j += 1
        finally:
            d.stop()
        dl, lr, lq = median(delays), median(lat_rebuild), median(lat_quiet)
        self.t.add(f"view rebuild after a one-line append to a {n / 1e6:g}M-indicator store "
                   f"(append to served, median of {len(delays)})", t_runs(delays), "—", "—", "≤ 0.3 s",
                   dl <= 0.3)
        ms = lambda x, ref=None: fmt_ms(x * 1e9, ref and ref * 1e9)  # noqa: E731
        pr = lambda v: f"p90 {ms(pct(sorted(v), 90))}, {len(v)} appends"  # noqa: E731
        self.t.add("append latency p50 while views rebuild vs the same appends with no rebuild running",
                   f"{ms(lr)} ({pr(lat_rebuild)})", f"{ms(lq)} ({pr(lat_quiet)})", ratio_s(lq / lr),
                   "≥ 0.8×", lq / lr >= 0.8)

    def allowlist(self):
        """The allowlist at feed sizes. A view rebuilt right after its allowlist changed (so the
        allowlist's index is rebuilt too), with 100,000 allow entries over 1M listed ipv4 lines
        and over 1M domains, next to the same rebuild with both allowlists emptied (rounds
        interleaved, medians compared); and lookup/ADDRESS of addresses inside 100,000 stored
        networks (covered, not stored as such), next to reading a plain small file (interleaved
        runs, the median of their p99). Shapes as in feeds: listed networks /16 to /28, most of them
        /24; allowed, half listed values, half networks /24 to /32 (a CDN's /24, a service's
        address) or parent domains. A listed network with an allowed part is served minus it,
        as up to 32 - prefix networks: that is the cost over the empty allowlist."""
        n = 100_000 if self.quick else 1_000_000
        k = n // 10
        n_nets = 20_000 if self.quick else 100_000
        rounds = 3 if self.quick else 5
        r = random.Random(SEED + 7)
        src, data = self.p("src-allow"), self.p("data-allow")
        os.makedirs(os.path.join(src, "live"), exist_ok=True)
        ipv4 = gen_type("ipv4", 0, n)
        nets = set()
        while len(nets) < n_nets:
            length = r.choice((16, 18, 20, 22, 23, 24, 24, 24, 25, 26, 27, 28))
            addr = r.getrandbits(32) & (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
            nets.add((addr, length))
        nets = sorted(nets)
        dotted = lambda x: f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"  # noqa: E731
        domains = gen_type("domain", 0, n)
        with open(os.path.join(src, "live", "ipv4.txt"), "w") as f:
            f.write("\n".join(ipv4 + [f"{dotted(a)}/{l}" for a, l in nets]) + "\n")
        with open(os.path.join(src, "live", "domain.txt"), "w") as f:
            f.write("\n".join(domains) + "\n")
        self.import_(data, src)
        allow_v4 = r.sample(ipv4, k // 2)
        while len(allow_v4) < k:
            length = r.choice((24, 24, 28, 29, 30, 31, 32, 32))
            allow_v4.append(f"{dotted(r.getrandbits(32) & (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF)}/{length}")
        allow_dom = r.sample(domains, k // 2)
        parents = [d.split(".", 1)[1] for d in r.sample(domains, k) if d.count(".") >= 2]
        allow_dom += parents[: k - len(allow_dom)]
        cfg = self.cfg("allow.toml", "[views]\nrefresh = \"1h\"\n"
                       "[views.all]\ntypes = [\"ipv4\", \"domain\"]\n")
        d = Daemon(self.bin, data, self.p("mnt-allow"), cfg, self.p("iocfs-allow.log"))
        d.start()
        try:
            def builds():
                d.ctl("refresh-views")
                v = d.stats()["views"]["all"]
                return {ty: v[ty]["last_build"] for ty in ("ipv4", "domain")}

            # Interleaved rounds: a build with both allowlists emptied, then one right after
            # each allowlist was written again with a line of its own (a change: the build
            # indexes it again).
            base = {"ipv4": [], "domain": []}
            with_allow = {"ipv4": [], "domain": []}
            last = None
            for i in range(rounds):
                for ty in ("ipv4", "domain"):
                    open(os.path.join(d.mnt, "allow", f"{ty}.txt"), "w").close()
                for ty, b in builds().items():
                    if b.get("suppressed_allow"):
                        raise RuntimeError(f"the {ty} view suppressed values with an empty allowlist: {b}")
                    base[ty].append(b["millis"] / 1000)
                for ty, lines in (("ipv4", allow_v4 + [dotted(0x05000000 + i)]),
                                  ("domain", allow_dom + [f"round{i}.allowed.example"])):
                    with open(os.path.join(d.mnt, "allow", f"{ty}.txt"), "w") as f:
                        f.write("\n".join(lines) + "\n")
                last = builds()
                for ty, b in last.items():
                    with_allow[ty].append(b["millis"] / 1000)
            listed = {"ipv4": len(ipv4) + n_nets, "domain": len(domains)}
            for ty in ("ipv4", "domain"):
                b = last[ty]
                if not b.get("suppressed_allow"):
                    raise RuntimeError(f"the {ty} view suppressed nothing: {b}")
                t_, b_ = median(with_allow[ty]), median(base[ty])
                self.t.add(f"view rebuild after an allowlist change, {k:,} allow entries over "
                           f"{listed[ty]:,} {ty} (median of {rounds}, interleaved; {b['suppressed_allow']:,} "
                           f"suppressed, {b.get('trimmed', 0):,} trimmed, {b['entries']:,} served)",
                           t_runs(with_allow[ty]), f"{t_runs(base[ty])} same rebuild, empty allowlist",
                           ratio_s(b_ / t_), "≤ 0.5 s", t_ <= 0.5)
            # lookup/ADDRESS: an address inside each of 5,000 stored networks, each asked once
            per = 2500 if self.quick else 5000
            picks = r.sample(nets, per)
            ldir = os.path.join(d.mnt, ".iocfs/lookup")
            paths = [os.path.join(ldir, dotted(a + r.randrange(1 << (32 - l)))) for a, l in picks]
            bdir = self.p("plain-lookup-nets")
            os.makedirs(bdir, exist_ok=True)
            for i in range(per):
                with open(os.path.join(bdir, f"v{i}"), "wb") as f:
                    f.write(b'{"value":"1.2.3.4","type":"ipv4","bucket":null,"covered_by":[{"value":"1.2.0.0/16","bucket":"live"}],"allowed_by":null,"views":["all"]}')
            with open(paths[0]) as f:
                answer = json.load(f)
            if not answer.get("covered_by"):
                raise RuntimeError(f"lookup of an address in a stored network: {answer}")
            # interleaved runs (iocfs, plain file), each address asked once
            a, b = [], []
            for ps, ids in zip(chunks_of(paths, rounds), chunks_of(range(per), rounds)):
                a.append(open_read_close_each(ps))
                b.append(open_read_close_each([os.path.join(bdir, f"v{i}") for i in ids]))
            a99, ca = pct_cell(a, 99, 50, fmt_ms)
            b99, cb = pct_cell(b, 99, 50, fmt_ms)
            self.t.add(f"lookup/ADDRESS covered by one of {n_nets:,} stored networks: p99 (p50), "
                       f"{per:,} distinct addresses", ca, f"{cb} plain file", ratio_s(b99 / a99), "p99 ≤ 0.2 ms",
                       a99 <= 0.2e6)
        finally:
            d.stop()

    def web(self):
        """nginx (the shipped site, www-data workers) serving views/all/ipv4.txt with 50,000
        addresses to `wrk -c32`, against the same nginx serving a plain copy of the bytes."""
        if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        if not shutil.which("wrk"):
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        n = 50_000
        src, data = self.p("src-web"), self.p("data-web")
        os.makedirs(os.path.join(src, "live"), exist_ok=True)
        ips = [l for l in gen_type("ipv4", 0, 2 * n) if "/" not in l][:n]
        with open(os.path.join(src, "live", "ipv4.txt"), "w") as f:
            f.write("\n".join(ips) + "\n")
        self.import_(data, src)
        d = Daemon(self.bin, data, self.p("mnt-web"), self.default_cfg, self.p("iocfs-web.log"))
        d.start()
        os.chmod(self.w, 0o755)
        ng = self.p("nginx")
        os.makedirs(ng, exist_ok=True)
        plain_root = self.p("web-plain")
        os.makedirs(os.path.join(plain_root, "views/all"), exist_ok=True)
        with open(os.path.join(d.mnt, "views/all/ipv4.txt"), "rb") as f:
            body = f.read()
        with open(os.path.join(plain_root, "views/all/ipv4.txt"), "wb") as f:
            f.write(body)
        for dd in (ng, plain_root, os.path.join(plain_root, "views"), os.path.join(plain_root, "views/all")):
            os.chmod(dd, 0o755)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        site = open(os.path.join(repo, "examples/nginx/iocfs.conf")).read()
        sites = ""
        for port, root in ((18091, d.mnt), (18092, plain_root)):
            sites += (site.replace("root /srv/iocfs;", f"root {root};")
                      .replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("listen [::]:8080;", "")
                      .replace("access_log /var/log/nginx/iocfs.access.log;", "access_log off;"))
        conf = os.path.join(ng, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"user www-data;\nworker_processes 2;\npid {ng}/nginx.pid;\nerror_log {ng}/error.log;\n"
                    f"events {{ worker_connections 1024; }}\nhttp {{\n"
                    + "".join(f"  {k}_temp_path {ng}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                    + sites + "\n}\n")
        proc = subprocess.Popen(["nginx", "-p", ng, "-c", conf, "-g", "daemon off;"],
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.CLEAN.add_proc(proc)
        try:
            wait_for(lambda: subprocess.run(["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:18092/views/all/ipv4.txt"]).returncode == 0,
                     30, "nginx", proc)
            secs = 3 if self.quick else 5
            rates = {18091: [], 18092: []}
            for _ in range(2 if self.quick else 3):
                for port in rates:
                    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{secs}s", f"http://127.0.0.1:{port}/views/all/ipv4.txt"],
                                         capture_output=True, text=True).stdout
                    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
                    if not m or "Non-2xx" in out or "Socket errors" in out and "read 0" not in out:
                        raise RuntimeError(f"wrk on port {port}: {out[-500:]}")
                    rates[port].append(float(m.group(1)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            d.stop()
        a, b = median(rates[18091]), median(rates[18092])
        rq = lambda x, ref=None: fmt_rate(x, "req/s", ref)  # noqa: E731
        self.t.add(f"nginx serving views/all/ipv4.txt ({n:,} addresses, {len(body) / 1e3:.0f} kB) to wrk -c32, "
                   f"median of {len(rates[18091])} interleaved runs", f"{rq(a)} ({runs(rates[18091], rq)})",
                   f"{rq(b)} ({runs(rates[18092], rq)}) same bytes on disk", ratio_s(a / b), "≥ 0.8×",
                   a / b >= 0.8)
