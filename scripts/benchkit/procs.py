"""Daemons, ratarmount and the FUSE floor, started and always stopped."""

import json
import os
import signal
import subprocess
import threading
import time

# ---------------------------------------------------------------------------------------
# Process and mount bookkeeping: everything started is stopped, every mount lazily
# unmounted, on success, error and signals. The pids are also written to WORK/pids for
# the bash wrapper's trap.
# ---------------------------------------------------------------------------------------


class Cleanup:
    def __init__(self, work):
        self.work = work
        self.procs = []   # Popen objects
        self.mounts = []  # mount points
        self.lock = threading.Lock()

    def add_proc(self, p):
        with self.lock:
            self.procs.append(p)
            with open(os.path.join(self.work, "pids"), "a") as f:
                f.write(f"{p.pid}\n")

    def add_mount(self, m):
        with self.lock:
            if m not in self.mounts:
                self.mounts.append(m)

    def run(self):
        with self.lock:
            procs, self.procs = self.procs, []
            mounts, self.mounts = self.mounts, []
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for m in reversed(mounts):
            if is_mounted(m):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


CLEAN = None


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            if line.split()[1].replace("\\040", " ") == path:
                return True
    return False


def wait_for(pred, timeout, what, proc=None, logfile=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            tail = ""
            if logfile and os.path.exists(logfile):
                tail = "\n".join(open(logfile, errors="replace").read().splitlines()[-15:])
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        time.sleep(0.005)
    raise RuntimeError(f"{what}: not ready after {timeout}s")


class Daemon:
    """One `iocfs mount` in the foreground (own session, so a Ctrl-C reaches the bench
    first and the daemon is stopped in order)."""

    def __init__(self, bin_, data, mnt, config, logfile):
        self.bin, self.data, self.mnt, self.config, self.logfile = bin_, data, mnt, config, logfile
        self.proc = None

    def start(self, timeout=600):
        os.makedirs(self.mnt, exist_ok=True)
        t = time.monotonic()
        logf = open(self.logfile, "a")
        self.proc = subprocess.Popen(
            [self.bin, "mount", "--config", self.config, "--data", self.data, self.mnt],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))
        logf.close()
        CLEAN.add_proc(self.proc)
        CLEAN.add_mount(self.mnt)
        wait_for(self.healthy, timeout, f"iocfs mount {self.mnt}", self.proc, self.logfile)
        ready = time.monotonic() - t
        # Views are rebuilt in the background after a start: let that finish before
        # anything is measured (it takes the CPU the rows would be measured on).
        wait_for(self.views_built, timeout, f"iocfs views built {self.mnt}", self.proc, self.logfile)
        return ready

    def views_built(self):
        try:
            views = self.stats().get("views", {})
        except (OSError, ValueError):
            return False
        return all(f.get("last_build") for files in views.values() for f in files.values())

    def healthy(self):
        try:
            with open(os.path.join(self.mnt, ".iocfs/health")) as f:
                return f.read().strip() == "ok"
        except OSError:
            return False

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=300):
        """SIGTERM: commit, checkpoint, unmount, exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise RuntimeError(f"iocfs did not exit within {timeout}s of SIGTERM (killed)")
        if is_mounted(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        if rc != 0:
            raise RuntimeError(f"iocfs exited {rc} after SIGTERM; log {self.logfile}")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)

    def stats(self):
        with open(os.path.join(self.mnt, ".iocfs/stats.json")) as f:
            return json.load(f)

    def ctl(self, cmd):
        fd = os.open(os.path.join(self.mnt, ".iocfs/ctl"), os.O_WRONLY)
        try:
            os.write(fd, (cmd + "\n").encode())
        finally:
            os.close(fd)


def stop_fuse(proc, mnt, unmount, timeout):
    """Unmount `mnt` with the `unmount` command, wait up to `timeout` s for its daemon to
    end (then terminate it, then kill it), and detach the mount if it is still there."""
    subprocess.run(unmount + [mnt], stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)


class Ratarmount:
    def __init__(self, exe, src, mnt, index, logfile):
        self.exe, self.src, self.mnt, self.index, self.logfile = exe, src, mnt, index, logfile
        self.proc = None

    def start(self, fresh=True):
        """Mount (with a fresh index unless fresh=False and one was written before); returns
        seconds until the file is visible."""
        os.makedirs(self.mnt, exist_ok=True)
        if fresh and os.path.exists(self.index):
            os.unlink(self.index)
        name = os.path.basename(self.src)[:-3]
        t = time.monotonic()
        logf = open(self.logfile, "a")
        # Defaults otherwise: the gzip backend and parallelization ratarmount picks itself.
        self.proc = subprocess.Popen(
            [self.exe, "-f", "--index-file", self.index, self.src, self.mnt],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        logf.close()
        CLEAN.add_proc(self.proc)
        CLEAN.add_mount(self.mnt)
        self.file = os.path.join(self.mnt, name)
        wait_for(lambda: is_mounted(self.mnt) and os.path.exists(self.file), 600,
                 f"ratarmount {self.src}", self.proc, self.logfile)
        return time.monotonic() - t

    def stop(self):
        if self.proc is None:
            return
        stop_fuse(self.proc, self.mnt, ["fusermount", "-u"], 30)


class FuseFloor:
    """examples/fuse_floor: a FUSE daemon that answers every lookup, open and read with no
    state behind it; its latencies are the machine's round-trip floor."""

    def __init__(self, exe, mnt, logfile):
        self.exe, self.mnt, self.logfile = exe, mnt, logfile
        self.proc = None

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        logf = open(self.logfile, "a")
        self.proc = subprocess.Popen([self.exe, self.mnt], stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, start_new_session=True)
        logf.close()
        CLEAN.add_proc(self.proc)
        CLEAN.add_mount(self.mnt)
        wait_for(lambda: is_mounted(self.mnt), 60, f"fuse_floor {self.mnt}", self.proc, self.logfile)

    def stop(self):
        if self.proc is None:
            return
        stop_fuse(self.proc, self.mnt, ["umount"], 10)
