"""Constants and the log line shared by the benchmark's modules."""

import sys
import time

MiB = 1024 * 1024
SEED = 20240611
TYPES = ["ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "sha512"]
TIERS = ["chaud", "tiede", "froid"]

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)
