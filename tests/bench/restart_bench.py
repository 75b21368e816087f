#!/usr/bin/python3
"""Warm restart benchmark: how long a daemon killed with SIGKILL takes to serve its tensors again,
and to have checked every one of them, per GiB, against the references measured in the same
run: a cold start of the same configuration (nothing to restore) and what a daemon without warm
restart would need instead, the clients writing the same bytes again (put, from memory).

It stores --host-gib GiB of DURABLE tensors of --tensor-mib MiB in the host tier and --ssd-gib
GiB more that are evicted to the swap file, kills the daemon with SIGKILL, starts it again on
the same run directory and measures: time until it answers (serving), until its stats show every
restored tensor checked (host copies hashed, swap copies read), and the first Get of each
tensor after that. Repeats --reps times; prints medians.

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/restart_bench.py \\
      [--tensord build/daemon/tensord] [--host-gib 1] [--ssd-gib 0.5] [--tensor-mib 4] [--reps 3]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import numpy as np

import tensord


class Daemon:
    def __init__(self, binary, run_dir, host_bytes, swap_bytes):
        self.binary, self.run_dir = binary, run_dir
        self.args = [binary, "--run-dir", run_dir, "--host-capacity", str(host_bytes),
                     "--log-level", "warn", "--swap-file", os.path.join(run_dir, "swap"),
                     "--swap-size", str(swap_bytes), "--set", "ssd.high_watermark=0.99"]
        self.socket = os.path.join(run_dir, "tensord.sock")
        self.proc = None

    def start(self):
        """Starts it; returns seconds until a session is taken."""
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.args)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"tensord exited with {self.proc.returncode}")
            try:
                tensord.Client(self.socket, timeout=0.2, reconnect_timeout=0).close()
                return time.perf_counter() - t0
            except tensord.Error:
                time.sleep(0.002)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
        subprocess.run([self.binary, "--forget", "--run-dir", self.run_dir, "--log-level",
                        "error"], capture_output=True)


def until_checked(sock, t0):
    """Seconds from t0 until every restored tensor was checked."""
    with tensord.Client(sock) as c:
        while True:
            k = c.stats()["counters"]
            if k["restore_verified"] + k["restore_verify_failures"] >= k["restored"]:
                return time.perf_counter() - t0, k["restored"], k["restored_bytes"]
            time.sleep(0.002)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensord", default=os.environ.get("TENSORD_BIN", "build/daemon/tensord"))
    ap.add_argument("--host-gib", type=float, default=1.0)
    ap.add_argument("--ssd-gib", type=float, default=0.5)
    ap.add_argument("--tensor-mib", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the run directory and swap file go")
    args = ap.parse_args()

    nbytes = args.tensor_mib << 20
    n_host = int(args.host_gib * (1 << 30)) // nbytes
    n_ssd = int(args.ssd_gib * (1 << 30)) // nbytes
    total_gib = (n_host + n_ssd) * nbytes / (1 << 30)
    work = tempfile.mkdtemp(prefix="tensord-restart-", dir=args.dir)
    host_bytes = (n_host + n_ssd + 8) * nbytes  # room for all: the SSD ones are evicted on purpose
    swap_bytes = (n_ssd + 8) * nbytes
    rng = np.random.default_rng(1)
    payload = [rng.integers(0, 256, nbytes, dtype=np.uint8) for _ in range(4)]
    rows = {"cold": [], "serving": [], "checked": [], "first_get": [], "reput": []}
    try:
        for rep in range(args.reps):
            run = os.path.join(work, f"run{rep}")
            os.makedirs(run)
            d = Daemon(args.tensord, run, host_bytes, swap_bytes)
            rows["cold"].append(d.start())
            with tensord.Client(d.socket) as c:
                t0 = time.perf_counter()
                for i in range(n_host + n_ssd):
                    c.put(f"t.{i}", payload[i % 4], durability="durable")
                rows["reput"].append(time.perf_counter() - t0)
                for i in range(n_host, n_host + n_ssd):
                    c.evict(f"t.{i}")
            d.kill9()
            t0 = time.perf_counter()
            rows["serving"].append(d.start())
            checked, restored, restored_bytes = until_checked(d.socket, t0)
            assert restored == n_host + n_ssd, (restored, n_host + n_ssd)
            rows["checked"].append(checked)
            with tensord.Client(d.socket) as c:
                t1 = time.perf_counter()
                for i in range(n_host + n_ssd):
                    t = c.get(f"t.{i}")
                    assert np.array_equal(np.asarray(t)[:64], payload[i % 4][:64])
                    t.release()
                rows["first_get"].append(time.perf_counter() - t1)
                assert c.stats()["counters"]["data_loss"] == 0
            d.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"restart after kill -9: {n_host} x {args.tensor_mib} MiB in the host tier + {n_ssd} "
          f"in the swap file = {total_gib:.2f} GiB, median of {args.reps}")
    print(f"{'measure':<44}{'seconds':>10}{'s per GiB':>11}{'vs cold start':>15}")
    names = [("cold", "cold start, nothing to restore (reference)"),
             ("serving", "warm restart: serving"),
             ("checked", "warm restart: every tensor checked"),
             ("first_get", "then a Get of every tensor (swap-ins)"),
             ("reput", "without warm restart: clients put it again")]
    for key, label in names:
        print(f"{label:<44}{med[key]:>10.3f}{med[key] / total_gib:>11.3f}"
              f"{med[key] / med['cold']:>14.1f}x")
    print(f"serving / re-put ratio: {med['serving'] / med['reput']:.3f}; "
          f"checked / re-put ratio: {med['checked'] / med['reput']:.3f}")


if __name__ == "__main__":
    main()
