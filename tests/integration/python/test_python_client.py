"""The Python binding against a real daemon: zero copy, leases tied to views, other processes."""

import gc
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import tensord
from conftest import run_python


def leases(c):
    return c.stats()["leases"]


def test_get_is_zero_copy_for_numpy_and_torch(daemon):
    with tensord.Client(daemon) as c:
        x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        c.put("x", x)
        t = c.get("x")
        base, size = c.segment(t.arena)
        assert base <= t.data_ptr and t.data_ptr + t.nbytes <= base + size
        a = np.asarray(t)
        assert a.ctypes.data == t.data_ptr and a.shape == (3, 4) and a.dtype == np.float32
        assert not a.flags.writeable, "a sealed tensor must be read-only through numpy"
        tt = torch.from_dlpack(t)
        assert tt.data_ptr() == t.data_ptr
        assert torch.equal(tt, x)


def test_writes_through_create_are_seen_by_another_process_after_seal(daemon):
    with tensord.Client(daemon) as c:
        t = c.create("w", (256, 256), "float16")
        view = np.asarray(t)
        assert view.flags.writeable
        view[:] = np.arange(256, dtype=np.float16)[None, :]
        t.seal()
        r = run_python(
            "import sys, numpy as np, tensord\n"
            "c = tensord.Client(sys.argv[1])\n"
            "a = np.asarray(c.get('w'))\n"
            "assert (a == np.arange(256, dtype=np.float16)[None, :]).all(), a\n"
            "print('OK', a.shape)\n", daemon)
        assert r.returncode == 0, r.stderr
        assert "OK (256, 256)" in r.stdout


def test_lease_lives_exactly_as_long_as_a_view(daemon):
    with tensord.Client(daemon) as c:
        c.put("v", np.ones(1000, dtype=np.int32))
        t = c.get("v")
        arr, tt = np.asarray(t), torch.from_dlpack(t)
        del t
        gc.collect()
        assert leases(c) == 1, "views still alive: the lease must stay"
        del arr
        gc.collect()
        assert leases(c) == 1, "the torch view is still alive"
        del tt
        gc.collect()
        assert leases(c) == 0


def test_two_processes_share_and_release(daemon):
    with tensord.Client(daemon) as c:
        c.put("shared", torch.full((1024,), 7, dtype=torch.int64))
        code = ("import sys, torch, tensord\n"
                "c = tensord.Client(sys.argv[1])\n"
                "t = torch.from_dlpack(c.get('shared'))\n"
                "assert int(t.sum()) == 7 * 1024\n"
                "print(c.stats()['leases'])\n")
        r = run_python(code, daemon)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "1"
        deadline = time.monotonic() + 2
        while leases(c) != 0:
            assert time.monotonic() < deadline, "an exited process must leave no lease"
            time.sleep(0.01)


def test_kill_9_of_a_python_client_releases_everything(daemon):
    with tensord.Client(daemon) as c:
        c.put("k", np.zeros(4096, dtype=np.uint8))
        before = c.stats()
        code = ("import sys, time, tensord\n"
                "c = tensord.Client(sys.argv[1])\n"
                "held = c.get('k')\n"
                "w = c.create('unsealed', (1 << 20,), 'uint8')\n"
                "print('READY', flush=True)\n"
                "time.sleep(600)\n")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        p = subprocess.Popen([sys.executable, "-c", code, daemon], env=env,
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "READY"
            assert leases(c) == 1
            p.send_signal(signal.SIGKILL)
            p.wait()
        finally:
            p.kill()
        host_used = lambda st: [t for t in st["tiers"] if t["tier"] == "host"][0]["used_bytes"]
        deadline = time.monotonic() + 2
        while True:  # session gone, leases gone, the unsealed create's memory back (zeroed)
            s = c.stats()
            if (s["leases"], s["sessions"], host_used(s)) == (0, before["sessions"],
                                                              host_used(before)):
                break
            assert time.monotonic() < deadline, s
            time.sleep(0.005)
        with pytest.raises(tensord.Error) as e:
            c.stat("unsealed")
        assert e.value.code_name == "NOT_FOUND"
        assert s["counters"]["aborts"] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int8, torch.uint8, torch.bool, torch.float64])
def test_round_trip_every_dtype(daemon, dtype):
    with tensord.Client(daemon) as c:
        x = (torch.randn(5, 7) * 10).to(dtype)
        c.put("t", x)
        t = c.get("t")
        assert t.shape == (5, 7)
        assert torch.equal(t.torch(), x)


def test_get_many_and_errors_carry_codes(daemon):
    with tensord.Client(daemon) as c:
        for i in range(10):
            c.put(f"b.{i}", np.full(16, i, dtype=np.float32))
        got = c.get_many([f"b.{i}" for i in range(10)])
        assert [float(np.asarray(g)[0]) for g in got] == list(range(10))
        assert leases(c) == 10
        del got
        gc.collect()
        assert leases(c) == 0
        with pytest.raises(tensord.Error) as e:
            c.get("missing")
        assert e.value.code_name == "NOT_FOUND" and e.value.code == 5
        with pytest.raises(tensord.Error) as e:
            c.put("b.0", np.zeros(1))
        assert e.value.code_name == "ALREADY_EXISTS"
        with pytest.raises(tensord.Error) as e:
            c.get("b.0", device="cuda")
        assert e.value.code_name == "FAILED_PRECONDITION"
        with pytest.raises(tensord.Error) as e:
            c.create("bad", (2, 2), "complex128")
        assert e.value.code_name == "INVALID_ARGUMENT"
        with pytest.raises(ValueError):
            c.put("d", np.zeros(1), durability="sometimes")
        assert leases(c) == 0 and len(c.ls("b.")) == 10


def test_ttl_and_delete(daemon):
    with tensord.Client(daemon) as c:
        c.put("short", np.zeros(8), ttl=0.05)
        assert c.stat("short")["ttl_ms"] == 50
        time.sleep(0.1)
        with pytest.raises(tensord.Error):
            c.stat("short")
        c.put("gone", np.zeros(8))
        c.delete("gone")
        assert c.ls("gone") == []


def test_stats_read_system_pressure_without_an_ssd_tier(daemon):
    # The default daemon has no SSD tier; MemAvailable once read 0 there.
    with tensord.Client(daemon) as c:
        pressure = c.stats()["pressure"]
    assert isinstance(pressure["mem_available_bytes"], int)
    assert pressure["mem_available_bytes"] > 0
    if os.path.exists("/proc/pressure/memory"):
        assert isinstance(pressure["psi_some_avg10"], float)
    else:
        assert pressure["psi_some_avg10"] is None, "no PSI here: not available, not 0"


def test_stats_show_what_the_eviction_policy_learned_of_each_pool(daemon):
    with tensord.Client(daemon) as c:
        for key in ("life.a", "life.b"):
            c.put(key, np.zeros(4096, dtype=np.uint8))
        t = c.get("life.a")
        del t  # its lease goes with it
        pools = [p for p in c.stats()["pools"] if p["lifetime_copies"] > 0]
        assert pools, "the pool that holds the tensors has lifetime statistics"
        copies = sum(p["lifetime_copies"] for p in pools)
        reused = sum(p["reuse_after_1"] * p["lifetime_copies"] for p in pools)
        assert copies >= 2
        assert reused >= 1, pools  # life.a was read again after it was stored
        assert all(0 <= p["reuse_after_1"] <= 1 and p["idle_median_s"] >= 0 for p in pools)
