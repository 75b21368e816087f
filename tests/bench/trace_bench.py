#!/usr/bin/python3
"""trace_bench over gRPC: replays a Mooncake-format KV-cache block trace against a running
tensord through the Python client, the way a serving engine's prefix cache would: per request,
look its blocks up in order (Stat), lease the leading run found (get_many; SSD blocks come up),
check their bytes, store the rest (put, CACHE, parent = the previous block), and, with
--lookahead N, hint the blocks of the next N requests first (client.hint).

It starts its own daemon (host tier = --share of the trace's unique blocks at the high
watermark, a swap file beneath) unless --socket names a running one, and runs each --lookahead
value given in the same run (0 = no hints: the reference). It prints host block and prefix hit
ratios, host+SSD prefix hit, the daemon's look-ahead counters and the client's time per
request. The in-process twin (every policy, Belady, the policy's cost) is trace_bench.cc.

  /usr/bin/python3 tests/bench/trace_bench.py --tensord build/daemon/tensord \\
      [--trace ../shared/data/mooncake_synthetic_trace.jsonl] [--share 0.05] \\
      [--lookahead 0,32] [--requests N] [--block-bytes 16384] [--policy slru+chain]
(PYTHONPATH=build/python for the client.)
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import tensord


def load(path, limit):
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r["hash_ids"]:
                    out.append(r["hash_ids"])
            if len(out) >= limit:
                break
    return out


def start_daemon(binary, run_dir, host_bytes, swap_bytes, policy):
    sock = os.path.join(run_dir, "tensord.sock")
    proc = subprocess.Popen([binary, "--set", "daemon.persist=false", "--run-dir", run_dir, "--host-capacity", str(host_bytes),
                             "--log-level", "warn", "--no-prefault",
                             "--swap-file", os.path.join(run_dir, "swap"),
                             "--swap-size", str(swap_bytes),
                             "--set", "ssd.high_watermark=0.97", "--set", "ssd.low_watermark=0.93",
                             "--set", f"policy.eviction={policy}"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(sock):
            try:
                tensord.Client(sock, timeout=0.5).close()
                return proc, sock
            except tensord.Error:
                pass
        time.sleep(0.05)
    proc.kill()
    sys.exit("trace_bench.py: tensord did not start")


def replay(sock, trace, block_bytes, lookahead, ns):
    key = lambda b: f"{ns}.b{b}"
    hits = {"host": 0, "ssd": 0}
    host_prefix = any_prefix = accesses = wrong = 0
    times = []
    with tensord.Client(sock) as c:
        before = c.stats()["counters"]
        hinted_upto = 0
        for i, blocks in enumerate(trace):
            t0 = time.perf_counter()
            if lookahead:
                ahead = []
                hinted_upto = max(hinted_upto, i)
                while hinted_upto < min(len(trace), i + 1 + lookahead):
                    ahead += [key(b) for b in trace[hinted_upto]]
                    hinted_upto += 1
                if ahead:
                    c.hint(ahead)
            where = []
            for b in blocks:
                try:
                    where.append(c.stat(key(b))["tier"])
                except tensord.Error:
                    where.append(None)
            accesses += len(blocks)
            prefix = host = 0
            while prefix < len(where) and where[prefix] is not None:
                prefix += 1
            while host < len(where) and where[host] == "host":
                host += 1
            for w in where:
                if w in hits:
                    hits[w] += 1
            host_prefix += host
            any_prefix += prefix
            usable = prefix
            if prefix:
                try:
                    got = c.get_many([key(b) for b in blocks[:prefix]])
                except tensord.Error:  # evicted since the look-up: read one by one
                    got = []
                    for b in blocks[:prefix]:
                        try:
                            got.append(c.get(key(b)))
                        except tensord.Error:
                            break
                usable = len(got)
                for b, t in zip(blocks, got):
                    wrong += int(np.frombuffer(memoryview(t), dtype=np.uint64, count=1)[0]) != b
                del got
            for j in range(usable, len(blocks)):
                data = np.zeros(block_bytes, dtype=np.uint8)
                data[:8] = np.frombuffer(np.uint64(blocks[j]).tobytes(), dtype=np.uint8)
                try:
                    c.put(key(blocks[j]), data, durability="cache",
                          parent=key(blocks[j - 1]) if j else "")
                except tensord.Error as e:
                    if e.code_name != "ALREADY_EXISTS":
                        raise
            times.append(time.perf_counter() - t0)
        after = c.stats()["counters"]
    delta = {k: after[k] - before.get(k, 0) for k in after if k.startswith("lookahead_")}
    return {"host_block": hits["host"] / accesses, "ssd_block": hits["ssd"] / accesses,
            "host_prefix": host_prefix / accesses, "any_prefix": any_prefix / accesses,
            "ms_per_request": 1e3 * statistics.median(times), "wrong": wrong, **delta}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trace", default=os.path.join(here, "../../../shared/data/"
                                                   "mooncake_synthetic_trace.jsonl"))
    p.add_argument("--tensord", default="build/daemon/tensord")
    p.add_argument("--socket", default="", help="a running daemon instead of our own")
    p.add_argument("--share", type=float, default=0.05)
    p.add_argument("--lookahead", default="0,32")
    p.add_argument("--requests", type=int, default=10**9)
    p.add_argument("--block-bytes", type=int, default=16384)
    p.add_argument("--policy", default="slru+chain")
    a = p.parse_args()
    trace = load(a.trace, a.requests)
    unique = len({b for r in trace for b in r})
    print(f"trace: {a.trace}: {len(trace)} requests, {sum(map(len, trace))} block accesses, "
          f"{unique} unique blocks")
    rows = []
    for n in [int(x) for x in a.lookahead.split(",")]:
        run_dir = tempfile.mkdtemp(prefix="tensord-trace-")
        proc = None
        try:
            sock = a.socket
            if not sock:
                host = int(unique * a.share * (a.block_bytes + 0) / 0.97) // 4096 * 4096 + 4096
                swap = (unique + 1024) * (a.block_bytes + 4096) * 2 // 4096 * 4096
                proc, sock = start_daemon(a.tensord, run_dir, max(host, 4 << 20), swap, a.policy)
            rows.append((n, replay(sock, trace, a.block_bytes, n, f"la{n}")))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            shutil.rmtree(run_dir, ignore_errors=True)
    print(f"\n## Through the daemon over gRPC (Python client), host tier {a.share:.0%} of the "
          f"unique blocks, {a.block_bytes // 1024} KiB blocks, policy {a.policy}\n")
    print("| look-ahead | host block hit | host prefix hit | SSD block hit | host+SSD prefix hit "
          "| prefetch issued / used / late / wasted | client ms/request p50 | wrong |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        issued = max(1, r.get("lookahead_issued", 0))
        print(f"| {n or 'off'} | {r['host_block']:.3f} | {r['host_prefix']:.3f} | "
              f"{r['ssd_block']:.3f} | {r['any_prefix']:.3f} | {r.get('lookahead_issued', 0)} / "
              f"{r.get('lookahead_used', 0)} ({100 * r.get('lookahead_used', 0) / issued:.0f}%) / "
              f"{r.get('lookahead_late', 0)} / {r.get('lookahead_wasted', 0)} | "
              f"{r['ms_per_request']:.2f} | {r['wrong']} |")
    if any(r["wrong"] for _, r in rows):
        sys.exit("trace_bench.py: a hit served wrong bytes")


if __name__ == "__main__":
    main()
