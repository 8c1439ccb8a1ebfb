#!/usr/bin/env python3
"""Idle RSS of `distflow pmd` and `distflow node`, and a node's start time.

    bench/idle.py [--rounds 7] [--starts 5] [--settle 0.5] BINARY [BINARY...]

Per round, for each BINARY in turn (so two binaries alternate): start
`BINARY pmd --port P` on a free loopback port, wait until it accepts, wait
--settle seconds and read its VmRSS from /proc/PID/status; subscribe to its
events (`watch`); then --starts times: spawn `BINARY node -p P -a ALIAS
--no-auto-pmd` (stdin a pipe kept open, stdout/stderr to /dev/null) and time
spawn -> the PMD's `peer:join` for ALIAS, i.e. until the node is registered
and resolvable; after the last start, wait --settle seconds and read the
node's VmRSS. Every node is stopped by its PID (SIGTERM, then SIGKILL after
2 s), then the PMD. Report: per binary, the median over rounds of the PMD's
RSS, the node's RSS and the per-round median start time; with two binaries,
the ratios second/first.
"""
import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


class Frames:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def next(self, deadline):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return json.loads(body)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the PMD")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("PMD closed the connection")
            self.buf += chunk


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_round(binary, rnd, starts, settle):
    port = free_port()
    pmd = subprocess.Popen([binary, "pmd", "--port", str(port), "--log-level", "warn"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                watcher = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        time.sleep(settle)
        pmd_rss = rss_kib(pmd.pid)
        frames = Frames(watcher)
        watcher.sendall(frame({"type": "watch", "payload": {}, "requestId": 1}))
        frames.next(time.monotonic() + 5)
        start_ms = []
        for i in range(starts):
            alias = "idle-%d-%d-%d" % (os.getpid(), rnd, i)
            t0 = time.monotonic()
            node = subprocess.Popen([binary, "node", "-p", str(port), "-a", alias, "--no-auto-pmd"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            nodes.append(node)
            deadline = time.monotonic() + 10
            while True:
                msg = frames.next(deadline)
                p = msg.get("payload", {})
                if p.get("event") == "peer:join" and p.get("peer", {}).get("alias") == alias:
                    break
            start_ms.append((time.monotonic() - t0) * 1000)
        time.sleep(settle)
        node_rss = rss_kib(nodes[-1].pid)
        watcher.close()
        return pmd_rss, node_rss, statistics.median(start_ms)
    finally:
        for n in nodes:
            stop(n)
        stop(pmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.5)
    a = ap.parse_args()
    res = {b: [] for b in a.binaries}
    for rnd in range(a.rounds):
        for b in a.binaries:
            r = one_round(b, rnd, a.starts, a.settle)
            res[b].append(r)
            sys.stderr.write("round %d %s: pmd %d KiB, node %d KiB, start %.2f ms\n" % ((rnd + 1, b) + r))
    med = {b: [statistics.median(x[k] for x in res[b]) for k in range(3)] for b in a.binaries}
    print("| binary | PMD idle VmRSS | node idle VmRSS | node start -> registered |")
    print("|---|---|---|---|")
    for b in a.binaries:
        m = med[b]
        print("| %s | %.2f MiB | %.2f MiB | %.2f ms |" % (b, m[0] / 1024, m[1] / 1024, m[2]))
    if len(a.binaries) == 2:
        f, s = med[a.binaries[0]], med[a.binaries[1]]
        print("| second/first | %.3f | %.3f | %.3f |" % (s[0] / f[0], s[1] / f[1], s[2] / f[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
