#!/usr/bin/python3
"""Soak: --clients client processes (32) run mixed operations against one daemon for --minutes
(10), and the daemon is killed with SIGKILL and started again on the same run directory half way
through. Each client stores DURABLE and CACHE tensors whose bytes derive from their key and
version, reads its own and others' back, overwrites (delete + put) and deletes; it remembers
what it saw sealed. At the end every client checks every DURABLE tensor it still owns. Printed:
the daemon's RSS over time (it must stay flat after warm-up), operations, wrong bytes (must be
0), DURABLE tensors lost (must be 0), and that every client rode through the restart.
The reference is the first minute's RSS: the ratio of the last sample to it is printed.

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/soak_bench.py [--tensord build/daemon/tensord]
      [--clients 32] [--minutes 10] [--host-mib 256] [--swap-mib 1024]
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import tensord

CLIENT = r"""
import json, os, random, sys, time
import numpy as np
import tensord

sock, me, stop_path, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)

def payload(key, version, n):
    h = (hash((key, version)) & 0xffffffff)
    return np.random.default_rng(h).integers(0, 256, n, dtype=np.uint8)

c = tensord.Client(sock, reconnect_timeout=60)
mine = {}  # DURABLE key -> (version, nbytes), as last seen sealed
stats = dict(ops=0, puts=0, gets=0, deletes=0, wrong=0, errors=0, lost=0, checked=0)
n = 0
while not os.path.exists(stop_path):
    n += 1
    op = rng.random()
    try:
        if op < 0.35 or not mine:
            key = f"c{me}.{rng.randrange(48)}"
            nbytes = rng.choice([16 << 10, 64 << 10, 256 << 10, 1 << 20])
            durable = rng.random() < 0.6
            version = n
            if key in mine:
                c.delete(key)
                del mine[key]
            try:
                c.put(key, payload(key, version, nbytes), durability="durable" if durable else "cache")
            except tensord.Error as e:
                if e.code_name != "ALREADY_EXISTS":
                    raise
                c.delete(key)
                continue
            if durable:
                mine[key] = (version, nbytes)
            stats["puts"] += 1
        elif op < 0.85:
            key = rng.choice(list(mine))
            version, nbytes = mine[key]
            t = c.get(key)
            if not np.array_equal(np.asarray(t), payload(key, version, nbytes)):
                stats["wrong"] += 1
            t.release()
            stats["gets"] += 1
        elif op < 0.95:
            key = rng.choice(list(mine))
            c.delete(key)
            del mine[key]
            stats["deletes"] += 1
        else:
            c.ls(f"c{me}.")
        stats["ops"] += 1
    except tensord.Error as e:
        # The daemon is restarting (the client reconnects on the next call), or it is full.
        if e.code_name == "NOT_FOUND" and op >= 0.35 and op < 0.85:
            stats["lost"] += 1  # a DURABLE tensor seen sealed is gone
            mine.pop(key, None)
        stats["errors"] += 1
        time.sleep(0.01)
for key, (version, nbytes) in list(mine.items()):
    for attempt in range(100):
        try:
            t = c.get(key)
            if not np.array_equal(np.asarray(t), payload(key, version, nbytes)):
                stats["wrong"] += 1
            t.release()
            stats["checked"] += 1
            break
        except tensord.Error as e:
            if e.code_name in ("NOT_FOUND", "DATA_LOSS"):
                stats["lost"] += 1
                break
            time.sleep(0.1)
stats["reconnects"] = c.reconnects
print(json.dumps(stats))
"""


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Daemon:
    def __init__(self, binary, run, host_mib, swap_mib):
        self.binary, self.run = binary, run
        self.args = [binary, "--run-dir", run, "--host-capacity", f"{host_mib}MiB", "--swap-file",
                     os.path.join(run, "swap"), "--swap-size", f"{swap_mib}MiB", "--log-level",
                     "warn", "--no-prefault"]
        self.socket = os.path.join(run, "tensord.sock")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args)
        while True:
            assert self.proc.poll() is None, "tensord exited at start"
            try:
                tensord.Client(self.socket, timeout=0.5, reconnect_timeout=0).close()
                return
            except tensord.Error:
                time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensord", default=os.environ.get("TENSORD_BIN", "build/daemon/tensord"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--host-mib", type=int, default=256)
    ap.add_argument("--swap-mib", type=int, default=1024)
    ap.add_argument("--sample-s", type=float, default=10)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tensord-soak-", dir="/var/tmp")
    d = Daemon(args.tensord, os.path.join(work, "run"), args.host_mib, args.swap_mib)
    os.makedirs(d.run)
    d.start()
    stop = os.path.join(work, "stop")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, d.socket, str(i), stop, str(i + 1)],
                                env=env, stdout=subprocess.PIPE, text=True)
               for i in range(args.clients)]
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    restart_at = t0 + args.minutes * 30
    restarted = False
    samples = []
    try:
        while time.monotonic() < end:
            time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
            now = time.monotonic() - t0
            samples.append((now, rss_mib(d.proc.pid)))
            print(f"  t={now:6.0f} s  daemon RSS {samples[-1][1]:8.1f} MiB", flush=True)
            if not restarted and time.monotonic() >= restart_at:
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                t = time.monotonic()
                d.start()
                print(f"  t={now:6.0f} s  kill -9 and restart: serving again in "
                      f"{time.monotonic() - t:.2f} s", flush=True)
                restarted = True
        open(stop, "w").close()
        results = []
        for p in clients:
            out, _ = p.communicate(timeout=600)
            results.append(json.loads(out.strip().splitlines()[-1]) if p.returncode == 0 else None)
    finally:
        open(stop, "w").close()
        for p in clients:
            if p.poll() is None:
                p.kill()
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            d.proc.wait()
        subprocess.run([args.tensord, "--forget", "--run-dir", d.run, "--log-level", "error"],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    ok = [r for r in results if r is not None]
    total = {k: sum(r[k] for r in ok) for k in ("ops", "puts", "gets", "deletes", "wrong",
                                                 "lost", "checked", "errors")}
    first = [r for t, r in samples if t <= 60] or [samples[0][1]]
    warm = statistics.median(first)
    # After the restart the daemon is a new process: compare its own first and last samples.
    print(f"\nsoak: {args.clients} clients, {args.minutes:g} min, kill -9 + restart at half time")
    print(f"{'clients finished':<34}{len(ok)} of {args.clients}")
    print(f"{'clients that reconnected':<34}{sum(1 for r in ok if r['reconnects'] >= 1)}")
    for k in ("ops", "puts", "gets", "deletes", "errors"):
        print(f"{k:<34}{total[k]}")
    print(f"{'DURABLE tensors checked at the end':<36}{total['checked']}")
    print(f"{'wrong bytes (must be 0)':<34}{total['wrong']}")
    print(f"{'DURABLE tensors lost (must be 0)':<34}{total['lost']}")
    print(f"{'RSS first minute / last sample':<34}{warm:.1f} / {samples[-1][1]:.1f} MiB "
          f"(ratio {samples[-1][1] / warm:.2f})")


if __name__ == "__main__":
    main()
