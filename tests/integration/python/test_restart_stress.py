"""Warm restart under load (issue 17): a writer process stores 1,000 DURABLE tensors through a
32 MiB host tier (so about half of them live in the swap file), then keeps writing and deleting
CACHE tensors, while the test kills the daemon with SIGKILL at random moments, 20 times, and
starts it again on the same run directory. After every restart each tensor the writer saw sealed
must be there with identical bytes. The writer never restarts: its client reconnects by itself."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tensord
from conftest import TENSORD_BIN

N = 1000
NBYTES = 64 << 10
ITERATIONS = 20

WRITER = r"""
import os, sys, time
import numpy as np
import tensord

sock, acked_path, stop_path, n, nbytes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def pattern(i):
    return np.random.default_rng(i).integers(0, 256, nbytes, dtype=np.uint8)

c = tensord.Client(sock, reconnect_timeout=60)
acked = open(acked_path, "a", buffering=1)
i = 0
churn = 0
while not os.path.exists(stop_path):
    try:
        if i < n:
            want = pattern(i)
            try:
                c.put(f"d.{i}", want, durability="durable")
            except tensord.Error as e:
                if e.code_name != "ALREADY_EXISTS":
                    raise
                # Sealed by the instance that died before its answer came back: keep it if it
                # is ours, byte for byte.
                t = c.get(f"d.{i}")
                same = np.array_equal(np.asarray(t), want)
                t.release()
                if not same:
                    c.delete(f"d.{i}")
                    continue
            acked.write(f"{i}\n")
            i += 1
        else:
            c.put(f"c.{churn % 64}", np.full(nbytes, churn & 255, dtype=np.uint8), durability="cache")
            if churn >= 32:
                try:
                    c.delete(f"c.{(churn - 32) % 64}")
                except tensord.Error:
                    pass
            churn += 1
    except tensord.Error:
        time.sleep(0.02)  # the daemon is down or restarting; the client reconnects on the next call
print(i, churn)
"""


def pattern(i):
    return np.random.default_rng(i).integers(0, 256, NBYTES, dtype=np.uint8)


class Daemon:
    def __init__(self, tmp_path):
        self.run_dir = tmp_path / "run"
        self.swap = tmp_path / "swap"
        self.socket = str(self.run_dir / "tensord.sock")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([TENSORD_BIN, "--run-dir", str(self.run_dir),
                                      "--host-capacity", "32MiB", "--swap-file", str(self.swap),
                                      "--swap-size", "256MiB", "--log-level", "error",
                                      "--no-prefault"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tensord exited with {self.proc.returncode}"
            try:
                tensord.Client(self.socket, timeout=0.5, reconnect_timeout=0).close()
                return
            except tensord.Error:
                time.sleep(0.02)
        pytest.fail("tensord did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0


def read_acked(path):
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split("\n")[:-1]]  # whole lines only


def check_all(sock, keys):
    """Every key is there with its bytes. Returns the number checked."""
    with tensord.Client(sock, reconnect_timeout=0) as c:
        for i in keys:
            t = c.get(f"d.{i}")
            got = np.asarray(t)
            assert got.shape == (NBYTES,), i
            assert np.array_equal(got, pattern(i)), f"d.{i}: wrong bytes after a restart"
            t.release()
        stats = c.stats()["counters"]
        assert stats["data_loss"] == 0
        assert stats["restore_verify_failures"] == 0
    return len(keys)


def test_kill_nine_twenty_times_under_write_load_loses_no_sealed_tensor(tmp_path):
    rng = random.Random(17)
    d = Daemon(tmp_path)
    acked_path = tmp_path / "acked"
    stop_path = tmp_path / "stop"
    d.start()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, d.socket, str(acked_path),
                               str(stop_path), str(N), str(NBYTES)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        checked = 0
        for it in range(ITERATIONS):
            time.sleep(rng.uniform(0.1, 0.8))
            d.kill9()
            acked = read_acked(acked_path)  # everything acknowledged before the kill
            d.start()
            checked += check_all(d.socket, acked)
            assert writer.poll() is None, "the writer must ride through the restarts"
        # The writer finishes its DURABLE tensors, then a clean stop and start keeps them too.
        deadline = time.monotonic() + 120
        while len(read_acked(acked_path)) < N and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(read_acked(acked_path)) == N
        stop_path.touch()
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        d.stop()
        d.start()
        with tensord.Client(d.socket) as c:
            on_ssd = sum(c.stat(f"d.{i}")["tier"] == "ssd" for i in range(N))
            assert on_ssd > 0, "some tensors live in the swap file only"
        checked += check_all(d.socket, range(N))
        print(f"{ITERATIONS} kills, {checked} tensors checked ({on_ssd} of {N} restored from "
              f"the swap file at the end), writer: {out.strip()}")
    finally:
        stop_path.touch()
        if writer.poll() is None:
            writer.kill()
        d.stop()
        subprocess.run([TENSORD_BIN, "--forget", "--log-level", "error", "--run-dir",
                        str(d.run_dir)], capture_output=True)
