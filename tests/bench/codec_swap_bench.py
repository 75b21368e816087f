"""codec_swap_bench: swapping KV blocks through the real daemon, raw against the codec stage.

For each compression (none, lossless, lossy within 1%, and lossy with the compressed RAM front)
a tensord is started on one swap file; N float16 KV-shaped tensors are put, then every one is
evicted to the SSD tier (swap-out one tensor at a time, timed) and read back with get_many in
batches of 8 (swap-in, timed), all over gRPC from this process. A second daemon per row has
watermarks that demote everything: the tensors are put and the migrator swaps them out in its
batches (timed from the first put until all but one are on the SSD tier). It prints logical GB/s (tensor bytes per second) against fio on the
same file system measured in the same run, the bytes written to the swap file, and the error of
what came back. Then, for a fixed budget (host tier + swap file, and + compressed RAM), how many
DURABLE KV blocks fit before the daemon answers RESOURCE_EXHAUSTED.

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/codec_swap_bench.py \
      --tensord build/daemon/tensord [--dir /var/tmp] [--count 32] [--mib 16] [--reps 3] \
      [--disk-mbps 400]

--disk-mbps N (root) runs the daemons and fio in a cgroup whose block I/O to the disk under --dir
is throttled to N MB/s each way (cgroup v2 io.max, else v1 blkio.throttle): a disk slower than
the cores that encode, as a SATA SSD, or an NVMe shared with other work, is. Compression can
only multiply swap bandwidth where the disk, not the codec, is the bottleneck; the run without it
shows the machine as it is.

The KV tensors are (tokens, kv heads, head dim) = (N, 8, 128) float16 with per-channel scales and
offsets as keys have (outlier channels); a deterministic seed.
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

import torch

import tensord


class DiskThrottle:
    """A cgroup limiting block I/O to the disk holding `path` to `bps` bytes/s each way; the
    processes started with `preexec` join it. Real kernel throttling (io.max / blkio.throttle),
    applied to O_DIRECT and io_uring I/O alike."""

    def __init__(self, path, bps):
        dev = os.stat(path).st_dev
        node = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
        if os.path.exists(os.path.join(node, "partition")):  # throttles apply to whole disks
            node = os.path.join(node, "..")
        with open(os.path.join(node, "dev")) as f:
            self.dev = f.read().strip()
        v2 = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(v2) and "io" in open(v2).read().split():
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                f.write("+io")
            self.dir = "/sys/fs/cgroup/tensord-codec-swap-bench"
            os.makedirs(self.dir, exist_ok=True)
            with open(os.path.join(self.dir, "io.max"), "w") as f:
                f.write(f"{self.dev} rbps={bps} wbps={bps}")
        elif os.path.isdir("/sys/fs/cgroup/blkio"):
            self.dir = "/sys/fs/cgroup/blkio/tensord-codec-swap-bench"
            os.makedirs(self.dir, exist_ok=True)
            for rw in ("read", "write"):
                with open(os.path.join(self.dir, f"blkio.throttle.{rw}_bps_device"), "w") as f:
                    f.write(f"{self.dev} {bps}")
        else:
            sys.exit("--disk-mbps needs cgroup v2 with the io controller or cgroup v1 blkio")

    def preexec(self):
        with open(os.path.join(self.dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def remove(self):
        try:
            os.rmdir(self.dir)
        except OSError:
            pass


THROTTLE = None  # the DiskThrottle of --disk-mbps


def preexec():
    if THROTTLE is not None:
        THROTTLE.preexec()


def fio(path, total_mib, rw):
    out = subprocess.run(
        ["fio", "--name=ref", f"--filename={path}", f"--size={total_mib}M", "--ioengine=io_uring",
         "--direct=1", "--bs=1M", "--iodepth=32", f"--rw={rw}", "--output-format=json"],
        capture_output=True, text=True, check=True, preexec_fn=preexec).stdout
    job = json.loads(out)["jobs"][0]
    return job["write" if rw == "write" else "read"]["bw_bytes"]


class Daemon:
    def __init__(self, binary, work, host_mib, swap_mib, *extra):
        self.run = tempfile.mkdtemp(prefix="run.", dir=work)
        self.swap = os.path.join(work, "codec_swap_bench.swap")
        args = [binary, "--set", "daemon.persist=false", "--run-dir", self.run, "--host-capacity", f"{host_mib}MiB",
                "--swap-file", self.swap, "--swap-size", f"{swap_mib}MiB", "--log-level", "warn",
                "--no-prefault", *extra]
        self.proc = subprocess.Popen(args, preexec_fn=preexec)
        self.sock = os.path.join(self.run, "tensord.sock")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                tensord.Client(self.sock, timeout=0.5).close()
                return
            except tensord.Error:
                time.sleep(0.05)
        self.proc.kill()
        sys.exit("tensord did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.run, ignore_errors=True)
        if os.path.exists(self.swap):
            os.unlink(self.swap)


def kv_blocks(count, mib, seed=1):
    tokens = mib * (1 << 20) // (8 * 128 * 2)
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(8, 128, generator=gen) * 3 + 0.25
    offset = torch.randn(8, 128, generator=gen)
    return [(torch.randn(tokens, 8, 128, generator=gen) * scale + offset).to(torch.float16)
            for _ in range(count)]


def put_kwargs(mode):
    if mode == "none":
        return {}
    if mode == "lossless":
        return {"compression": "lossless"}
    return {"compression": "lossy", "error_budget": 0.01}


def swap_round(args, mode, blocks, ram_mib):
    total_mib = len(blocks) * args.mib
    extra = ["--set", f"ssd.compressed_ram={ram_mib}MiB"] if ram_mib else []
    d = Daemon(args.tensord, args.dir, total_mib + 64, total_mib + 64, *extra)
    outs, ins, errs = [], [], []
    try:
        with tensord.Client(d.sock) as c:
            for rep in range(args.reps):
                keys = [f"r{rep}.kv{i}" for i in range(len(blocks))]
                for k, x in zip(keys, blocks):
                    c.put(k, x, **put_kwargs(mode))
                w0 = c.stats()["swap"]
                t0 = time.perf_counter()
                for k in keys:
                    c.evict(k)
                outs.append(total_mib * (1 << 20) / (time.perf_counter() - t0))
                w1 = c.stats()["swap"]
                written = w1["bytes_written"] - w0["bytes_written"]
                in_ram = w1["ram_used_bytes"]
                t0 = time.perf_counter()
                got = []
                for i in range(0, len(keys), 8):
                    got += c.get_many(keys[i:i + 8])
                ins.append(total_mib * (1 << 20) / (time.perf_counter() - t0))
                worst = 0.0
                for t, x in zip(got, blocks):
                    y = torch.from_dlpack(t).float()
                    worst = max(worst, ((y - x.float()).norm() / x.float().norm()).item())
                errs.append(worst)
                del got, t
                for k in keys:
                    c.delete(k)
    finally:
        d.stop()
    return {"out": statistics.median(outs), "in": statistics.median(ins), "written": written,
            "in_ram": in_ram, "err": max(errs)}


def migrator_round(args, mode, blocks, ram_mib):
    """Swap-out by the migrator: watermarks that demote everything, the tensors put one after
    another; the time from the first put until every one is on the SSD tier (host empty)."""
    total_mib = len(blocks) * args.mib
    extra = ["--set", "ssd.high_watermark=0.02", "--set", "ssd.low_watermark=0.01"]
    if ram_mib:
        extra += ["--set", f"ssd.compressed_ram={ram_mib}MiB"]
    d = Daemon(args.tensord, args.dir, total_mib + 64, total_mib + 64, *extra)
    rates = []
    try:
        with tensord.Client(d.sock) as c:
            for rep in range(args.reps):
                keys = [f"m{rep}.kv{i}" for i in range(len(blocks))]
                t0 = time.perf_counter()
                for k, x in zip(keys, blocks):
                    c.put(k, x, **put_kwargs(mode))
                # Demotion stops at the low watermark (1% of the tier): at most one tensor stays.
                while sum(c.stat(k)["tier"] != "ssd" for k in keys) > 1:
                    time.sleep(0.002)
                rates.append(total_mib * (1 << 20) / (time.perf_counter() - t0))
                for k in keys:
                    c.delete(k)
    finally:
        d.stop()
    return statistics.median(rates)


def capacity_round(args, mode, ram_mib, block_mib=2):
    """DURABLE KV blocks that fit in a 128 MiB host tier + 256 MiB swap file (+ RAM front)."""
    extra = ["--set", f"ssd.compressed_ram={ram_mib}MiB"] if ram_mib else []
    d = Daemon(args.tensord, args.dir, 128, 256, *extra)
    block = kv_blocks(1, block_mib, seed=7)[0]
    n = 0
    try:
        with tensord.Client(d.sock, timeout=20) as c:
            while n < 10000:
                try:
                    c.put(f"b{n}", block, durability="durable", **put_kwargs(mode))
                except tensord.Error as e:
                    if e.code_name != "RESOURCE_EXHAUSTED":
                        raise
                    break
                n += 1
            s = c.stats()
    finally:
        d.stop()
    return n, s["counters"].get("data_loss", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensord", default=os.environ.get("TENSORD_BIN", "build/daemon/tensord"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-capacity", action="store_true")
    ap.add_argument("--disk-mbps", type=float, default=0,
                    help="throttle the daemons' and fio's disk I/O to this many MB/s (root)")
    args = ap.parse_args()
    global THROTTLE
    if args.disk_mbps:
        THROTTLE = DiskThrottle(args.dir, int(args.disk_mbps * 1e6))
    try:
        run(args)
    finally:
        if THROTTLE is not None:
            THROTTLE.remove()


def run(args):
    total = args.count * args.mib
    ref = os.path.join(args.dir, "codec_swap_bench.fio")
    fw = statistics.median(fio(ref, total, "write") for _ in range(args.reps))
    fr = statistics.median(fio(ref, total, "read") for _ in range(args.reps))
    os.unlink(ref)
    print(f"{os.cpu_count()} cores; {args.count} x {args.mib} MiB float16 KV tensors per round, "
          f"median of {args.reps}; file system of {args.dir}"
          + (f"; disk I/O throttled to {args.disk_mbps:g} MB/s each way (cgroup, device "
             f"{THROTTLE.dev})" if THROTTLE else ""))
    print(f"fio (bs=1M, direct, io_uring QD32) on the same file system: write {fw / 1e9:.2f} GB/s, "
          f"read {fr / 1e9:.2f} GB/s\n")
    blocks = kv_blocks(args.count, args.mib)
    rows = [("none", "none", 0), ("lossless", "lossless", 0), ("lossy 1%", "lossy", 0),
            ("lossy 1% + compressed RAM", "lossy", total + 64)]
    results = {}
    print("| compression | swap-out by the migrator GB/s (logical) | ÷ fio write | ÷ raw | "
          "swap-out by evict, one at a time | ÷ raw | swap-in GB/s (logical) "
          "| ÷ fio read | ÷ raw | written to the swap file | kept in compressed RAM | "
          "max rel. error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, mode, ram in rows:
        r = swap_round(args, mode, blocks, ram)
        r["mig"] = migrator_round(args, mode, blocks, ram)
        results[label] = r
        raw = results["none"]
        print(f"| {label} | {r['mig'] / 1e9:.2f} | {r['mig'] / fw:.2f}× | {r['mig'] / raw['mig']:.2f}× "
              f"| {r['out'] / 1e9:.2f} | {r['out'] / raw['out']:.2f}× "
              f"| {r['in'] / 1e9:.2f} | {r['in'] / fr:.2f}× | {r['in'] / raw['in']:.2f}× "
              f"| {r['written'] / 2**20:.0f} MiB | {r['in_ram'] / 2**20:.0f} MiB | {r['err']:.2e} |")
    if args.skip_capacity:
        return
    print("\n| compression | 2 MiB DURABLE KV blocks held by 128 MiB host + 256 MiB swap | ÷ none "
          "| data loss |")
    print("|---|---|---|---|")
    base = None
    for label, mode, ram in [("none", "none", 0), ("lossless", "lossless", 0),
                             ("lossy 1%", "lossy", 0),
                             ("lossy 1% + 64 MiB compressed RAM", "lossy", 64)]:
        n, lost = capacity_round(args, mode, ram)
        base = base or n
        print(f"| {label} | {n} | {n / base:.2f}× | {lost} |")


if __name__ == "__main__":
    main()
