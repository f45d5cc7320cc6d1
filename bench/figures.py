#!/usr/bin/env python3
"""Start-up, hot-swap and memory figures of the release binary.

  start-up   host start to a first response from each of 10 services, with a
             cold and with a warm compiled-artifact cache
  memory     resident memory per idle (loaded) service, and per in-flight
             instance (requests parked in a guest's sleep)
  swap       rename of a new ~500 KB version into the plugins directory to
             the first response served by it, cold and warm cache

Run by `make bench` (after building everything it needs);
`bench/figures.py [--quick]` directly. Prints one table.
"""

import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, os.environ.get("BIN_DIR", "target/release"), "wasmhost")
GUESTS = os.path.join(ROOT, "target/plugins/wasm32-wasip2/release")
# The user service built in the dev profile: ~500 KB of real, unoptimized code.
BIG_USER = os.path.join(ROOT, "target/plugins/bench/wasm32-wasip2/debug/user.wasm")
QUICK = "--quick" in sys.argv
PORT = 18901

# Seven distinct Rust components; three more are copies made distinct by a
# custom section (their own digest, so their own compile and cache entry).
TEN = [
    ("plugins/user@1.0.0.wasm", None),
    ("examples/user@1.1.0.wasm", None),
    ("plugins/order@1.0.0.wasm", None),
    ("examples/catalog@2.0.0.wasm", None),
    ("examples/hello@1.0.0.wasm", None),
    (os.path.join(GUESTS, "probe.wasm"), None),
    (os.path.join(GUESTS, "hostile.wasm"), None),
    ("plugins/order@1.0.0.wasm", b"copy-1"),
    ("examples/catalog@2.0.0.wasm", b"copy-2"),
    (os.path.join(GUESTS, "probe.wasm"), b"copy-3"),
]


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def custom_section(name, payload):
    body = leb128(len(name)) + name + payload
    return b"\x00" + leb128(len(body)) + body


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Host:
    """A `wasmhost serve` process on PORT; killed with SIGINT on stop()."""

    def __init__(self, plugins, state, cache, extra=()):
        self.log = open(os.path.join(state + ".log"), "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--plugins", plugins, "--state", state, "--cache-dir", cache,
             "--listen", f"127.0.0.1:{PORT}", "--admin-listen", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log)

    def wait_listening(self, timeout=600):
        path = self.log.name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host exited: {open(path).read()}")
            if "listening on" in open(path).read():
                return
            time.sleep(0.005)
        raise RuntimeError("host did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.log.close()


def get(path, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def answered_by(path, header, value):
    try:
        return get(path).getheader(header) == value
    except OSError:
        return False


def ten_services(work):
    plugins = os.path.join(work, "ten")
    os.makedirs(plugins)
    for i, (src, tag) in enumerate(TEN):
        data = open(os.path.join(ROOT, src), "rb").read()
        if tag:
            data += custom_section(b"wasmhost-bench", tag)
        with open(os.path.join(plugins, f"svc{i}@1.0.0.wasm"), "wb") as f:
            f.write(data)
    return plugins


def start_up(work, plugins, cache, n):
    """ms from exec to every service having answered once."""
    state = tempfile.mkdtemp(dir=work)
    host = Host(plugins, state, cache)
    pending = [f"svc{i}" for i in range(n)]
    while pending:
        if host.proc.poll() is not None:
            raise RuntimeError(open(host.log.name).read())
        pending = [s for s in pending if not answered_by(f"/{s}", "x-wasmhost-service", s)]
    elapsed = (time.monotonic() - host.started) * 1000
    host.stop()
    return elapsed


def idle_rss(work, plugins, cache):
    state = tempfile.mkdtemp(dir=work)
    host = Host(plugins, state, cache)
    host.wait_listening()
    time.sleep(0.5)
    rss = rss_kib(host.proc.pid)
    host.stop()
    return rss


def in_flight_rss(work, cache, n):
    plugins = os.path.join(work, "sleepers")
    os.makedirs(plugins)
    shutil.copy(os.path.join(GUESTS, "hostile.wasm"), os.path.join(plugins, "hostile@1.0.0.wasm"))
    with open(os.path.join(plugins, "hostile.toml"), "w") as f:
        f.write(f"[limits]\nconcurrency = {n + 8}\n")
    state = tempfile.mkdtemp(dir=work)
    host = Host(plugins, state, cache, ["--max-instances", str(n + 16)])
    host.wait_listening()
    get("/hostile/sleep?ms=1")
    before = rss_kib(host.proc.pid)
    threads = [threading.Thread(target=get, args=("/hostile/sleep?ms=4000",)) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    during = rss_kib(host.proc.pid)
    for t in threads:
        t.join()
    host.stop()
    return before, during


def swap(work, cache, rounds):
    plugins = os.path.join(work, "swap")
    os.makedirs(plugins)
    shutil.copy(os.path.join(ROOT, "plugins/user@1.0.0.wasm"), plugins)
    shutil.copy(os.path.join(ROOT, "plugins/user.toml"), plugins)
    state = tempfile.mkdtemp(dir=work)
    host = Host(plugins, state, cache)
    host.wait_listening()
    times = []
    for i in range(rounds + 1):
        version = f"1.2.{i}"
        tmp = os.path.join(plugins, ".incoming")
        shutil.copy(BIG_USER, tmp)
        os.sync()
        t0 = time.monotonic()
        os.rename(tmp, os.path.join(plugins, f"user@{version}.wasm"))
        pin = {"x-wasmhost-version": version}
        while True:
            try:
                if get("/users", pin).getheader("x-wasmhost-version") == version:
                    break
            except OSError:
                pass
        times.append((time.monotonic() - t0) * 1000)
        os.remove(os.path.join(plugins, f"user@{version}.wasm"))
        time.sleep(0.5)
    host.stop()
    return times[0], times[1:]


def main():
    for f in [BIN, BIG_USER] + [os.path.join(ROOT, src) for src, _ in TEN]:
        if not os.path.exists(f):
            sys.exit(f"missing {f}: run `make bench` (it builds everything)")
    work = tempfile.mkdtemp(prefix="wasmhost-figures-")
    try:
        plugins = ten_services(work)
        empty = os.path.join(work, "empty")
        os.makedirs(empty)
        cache = os.path.join(work, "cache")
        cold = start_up(work, plugins, cache, len(TEN))
        warm = [start_up(work, plugins, cache, len(TEN)) for _ in range(1 if QUICK else 5)]
        idle_empty = idle_rss(work, empty, cache)
        idle_ten = idle_rss(work, plugins, cache)
        n = 20 if QUICK else 200
        before, during = in_flight_rss(work, cache, n)
        swap_cache = os.path.join(work, "swap-cache")
        swap_cold, swap_warm = swap(work, swap_cache, 1 if QUICK else 5)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    big = os.path.getsize(BIG_USER) // 1024
    rows = [
        ("host start to first response of all 10 services, cold cache", f"{cold:.0f} ms"),
        ("host start to first response of all 10 services, warm cache",
         f"{statistics.median(warm):.0f} ms (median of {len(warm)})"),
        ("resident memory per idle service (10 loaded vs none)",
         f"{(idle_ten - idle_empty) / len(TEN) / 1024:.2f} MiB (host alone {idle_empty / 1024:.1f} MiB)"),
        (f"resident memory per in-flight instance ({n} parked requests)",
         f"{(during - before) / n:.0f} KiB"),
        (f"rename to first response of a new {big} KB version, cold cache", f"{swap_cold:.0f} ms"),
        (f"rename to first response of a new {big} KB version, warm cache",
         f"{statistics.median(swap_warm):.0f} ms (median of {len(swap_warm)})"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:{width}}  {value}")


if __name__ == "__main__":
    main()
