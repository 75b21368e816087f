#!/usr/bin/python3
"""The remote tier (Redis) measured end to end, against redis-benchmark on the same server in the
same run. Starts one redis-server and two daemons (A and B, standing in for two machines) that
share every namespace through it.

1. Put/get of 1, 16 and 64 MiB KV-like tensors (float16, normal values): "put" is A's client
   sealing a CACHE tensor until A has published it to Redis (the codec stage included), "get" is
   B's client Get of a key B has never seen (lookup, chunked reads, checksums, decode, copy into
   B's shared memory, lease). With compression "none" and "lossy" (the KV codec, int8/fp8 within
   1%). Reference: redis-benchmark SET/GET of a value of the same size on one connection.
2. A 4k-token prefix's KV cache: time for B to obtain it from the remote tier (blocks of 256
   tokens, keys and values per layer, as the torch integration stores them) against recomputing
   it (the prefill of the workload benchmark's model, tensord.qwen3vl, its default "tiny" preset;
   --preset qwen3-vl-2b --layers 1 --tokens 1024 gives the real model's shape, one layer of it:
   prefill compute and KV bytes both grow linearly with the layers).

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/remote_bench.py
      [--tensord build/daemon/tensord] [--rounds 5] [--preset tiny] [--layers 0] [--tokens 4096]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import tensord
from tensord.qwen3vl import PRESETS, Qwen3VL

MiB = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_serving(sock, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with tensord.Client(sock) as c:
                c.stats()
                return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"daemon on {sock} did not come up")


def start_daemon(binary, run_dir, port, instance):
    return subprocess.Popen([binary, "--run-dir", run_dir, "--host-capacity", "3GiB", "--persist",
                             "false", "--log-level", "warn",
                             "--remote-addresses", f"127.0.0.1:{port}", "--remote-instance",
                             instance, "--remote-shared-namespaces", "*"])


def redis_reference(port, size):
    """redis-benchmark SET and GET of `size`-byte values on one connection: GB/s from the mean
    latency."""
    n = max(12, (512 * MiB) // size)
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", str(n),
                          "-d", str(size), "-c", "1", "--csv"], capture_output=True, text=True,
                         check=True).stdout
    gbps = {}
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols[0] in ("SET", "GET"):
            gbps[cols[0]] = size / (float(cols[2]) * 1e-3) / 1e9
    subprocess.run(["redis-cli", "-p", str(port), "del", "key:__rand_int__"], capture_output=True)
    return gbps["SET"], gbps["GET"]


def published(c):
    return c.stats()["remote"]["puts"]


def put_and_wait(a, key, value, compression):
    before = published(a)
    t0 = time.perf_counter()
    a.put(key, value, durability="cache", compression=compression,
          error_budget=0.01 if compression == "lossy" else 0.0)
    while published(a) == before:
        time.sleep(0.0005)
    return time.perf_counter() - t0


def throughput(a, b, port, rounds):
    rng = np.random.default_rng(0)
    rows = []
    for mib in (1, 16, 64):
        size = mib * MiB
        value = rng.standard_normal(size // 2).astype(np.float16)
        ref_set, ref_get = redis_reference(port, size)
        for mode in ("none", "lossy"):
            puts, gets, errs = [], [], []
            stored0 = a.stats()["remote"]["put_bytes"]
            for r in range(rounds):
                key = f"tp.{mib}.{mode}.{r}"
                puts.append(put_and_wait(a, key, value, mode))
                t0 = time.perf_counter()
                lease = b.get(key)
                got = lease.numpy().view(np.float16).copy()
                gets.append(time.perf_counter() - t0)
                lease.release()
                diff = got.astype(np.float32) - value.astype(np.float32)
                errs.append(float(np.sqrt((diff ** 2).mean() / (value.astype(np.float32) ** 2).mean())))
                if mode == "none" and not np.array_equal(got.view(np.uint16), value.view(np.uint16)):
                    sys.exit(f"{key}: B got different bytes")
            stored = (a.stats()["remote"]["put_bytes"] - stored0) / rounds
            put_gbps = size / statistics.median(puts) / 1e9
            get_gbps = size / statistics.median(gets) / 1e9
            rows.append((mib, mode, stored / size, put_gbps, ref_set, put_gbps / ref_set, get_gbps,
                         ref_get, get_gbps / ref_get, max(errs)))
    print("\nRemote put/get through two daemons vs redis-benchmark on the same Redis "
          f"(medians of {rounds}; GB/s of tensor bytes)")
    print(f"{'size':>6} {'codec':>6} {'stored':>7} {'put':>7} {'redis SET':>9} {'ratio':>6} "
          f"{'get':>7} {'redis GET':>9} {'ratio':>6} {'rel err':>8}")
    for m, mode, st, p, rs, pr, g, rg, gr, e in rows:
        print(f"{m:>4}Mi {mode:>6} {st:>6.2f}x {p:>7.2f} {rs:>9.2f} {pr:>6.2f} {g:>7.2f} {rg:>9.2f} "
              f"{gr:>6.2f} {e:>8.4f}")
    return rows


def prefix_kv(a, b, args):
    c = PRESETS[args.preset]
    if args.layers:
        c = c.replace(text=c.text.__class__(**{**c.text.__dict__,
                                               "num_hidden_layers": args.layers}))
    c = c.replace(dtype="float32")
    layers = c.text.num_hidden_layers
    torch.manual_seed(0)
    model = Qwen3VL(c, seed=0)
    ids = torch.randint(0, c.text.vocab_size - 2, (args.tokens,))
    recompute = []
    past = None
    for _ in range(args.prefill_rounds):
        t0 = time.perf_counter()
        out = model(ids)
        recompute.append(time.perf_counter() - t0)
        past = out.past
    block = 256
    rows = []
    for mode in ("none", "lossy"):
        keys = []
        for li, (k, v) in enumerate(past):  # (kv heads, tokens, head dim) per layer
            for s in range(0, args.tokens, block):
                for name, t in (("k", k), ("v", v)):
                    key = f"prefix.{mode}.{li}.{s // block}.{name}"
                    blk = t[:, s:s + block].to(torch.bfloat16).contiguous()
                    put_and_wait(a, key, blk, mode)
                    keys.append(key)
        t0 = time.perf_counter()
        leases = b.get_many(keys)
        kv = [l.torch().clone() for l in leases]  # as a serving engine would take them
        fetch = time.perf_counter() - t0
        for l in leases:
            l.release()
        nbytes = sum(x.numel() * 2 for x in kv)
        rows.append((mode, nbytes, fetch))
    rc = statistics.median(recompute)
    print(f"\nA {args.tokens}-token prefix's KV cache, {args.preset} model with {layers} "
          f"decoder layer(s) (bf16 KV, blocks of {block} tokens; median of "
          f"{args.prefill_rounds} prefills)")
    print(f"{'how':>24} {'KV bytes':>10} {'seconds':>9} {'vs recompute':>13}")
    print(f"{'recompute (prefill)':>24} {'':>10} {rc:>9.3f} {1.0:>12.2f}x")
    for mode, nbytes, fetch in rows:
        print(f"{'remote, ' + mode:>24} {nbytes / MiB:>8.1f}Mi {fetch:>9.3f} {rc / fetch:>12.1f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensord", default="build/daemon/tensord")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=0, help="decoder layers (0: the preset's)")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--prefill-rounds", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("remote_bench needs redis-server and redis-benchmark (apt install redis-server)")
    work = tempfile.mkdtemp(prefix="tensord-remote-bench-")
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save",
                              "", "--appendonly", "no", "--dir", work, "--logfile",
                              os.path.join(work, "redis.log")])
    daemons = []
    try:
        time.sleep(0.3)
        for name in ("a", "b"):
            os.makedirs(os.path.join(work, name))
            daemons.append(start_daemon(args.tensord, os.path.join(work, name), port, name))
        sa, sb = (os.path.join(work, n, "tensord.sock") for n in ("a", "b"))
        wait_serving(sa)
        wait_serving(sb)
        with tensord.Client(sa, namespace="bench") as a, tensord.Client(sb, namespace="bench") as b:
            throughput(a, b, port, args.rounds)
            prefix_kv(a, b, args)
            print("\nB's remote stats:", json.dumps({k: v for k, v in b.stats()["remote"].items()
                                                      if k in ("hits", "misses", "gets",
                                                               "get_bytes", "get_mbps",
                                                               "checksum_failures", "errors")}))
    finally:
        for d in daemons:
            d.terminate()
            d.wait()
        redis.terminate()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
