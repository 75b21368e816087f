"""Daemon restarts (issue 17): a client reconnects by itself, with backoff; a lease or an unsealed
create from before the restart reports itself invalid and is never sent to the new daemon; DURABLE
tensors outlive kill -9 of the daemon in the same run directory."""

import gc
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import tensord
from conftest import TENSORD_BIN


class Restartable:
    """A tensord on a private run directory that a test can kill -9 and start again there."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.socket = str(run_dir / "tensord.sock")
        self.proc = None

    def spawn(self):
        """Starts the daemon without waiting for it."""
        assert self.proc is None or self.proc.poll() is not None, "one instance at a time"
        self.proc = subprocess.Popen([TENSORD_BIN, "--run-dir", str(self.run_dir),
                                     "--host-capacity", "256MiB", "--log-level", "warn",
                                     "--no-prefault"])

    def wait_serving(self):
        """Waits until the daemon takes sessions (a kill -9 leaves the old socket file behind,
        so its presence means nothing)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tensord exited with {self.proc.returncode} at start")
            try:
                tensord.Client(self.socket, timeout=0.5, reconnect_timeout=0).close()
                return
            except tensord.Error:
                time.sleep(0.02)
        pytest.fail("tensord did not start")

    def start(self):
        self.spawn()
        self.wait_serving()

    def kill9(self):
        """SIGKILL by pid: no drain, no cleanup, the way a crash ends it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def restartable(tmp_path):
    d = Restartable(tmp_path / "run")
    d.start()
    yield d
    gc.collect()  # tensors of a failed test: let their leases go before the daemon stops
    d.stop()
    # A clean stop keeps the tensors for a warm restart; the test is over: forget them.
    subprocess.run([TENSORD_BIN, "--forget", "--log-level", "error", "--run-dir",
                    str(d.run_dir)], check=True, capture_output=True)


def wait_invalid(tensor):
    """The client learns of the restart when its session's stream ends: within moments."""
    deadline = time.monotonic() + 5
    while tensor.valid and time.monotonic() < deadline:
        time.sleep(0.01)
    return not tensor.valid


def test_a_client_reconnects_by_itself_and_old_leases_turn_invalid(restartable):
    c = tensord.Client(restartable.socket)
    data = np.arange(4096, dtype=np.float32)
    c.put("kept", data, durability="durable")
    old = c.get("kept")
    pending = c.create("pending", (1024,), "uint8")  # never sealed
    assert old.valid and pending.valid
    assert np.array_equal(np.asarray(old), data)

    restartable.kill9()
    restartable.start()

    assert wait_invalid(old), "a lease held across the restart must report itself invalid"
    assert not pending.valid, "so must an unsealed create of the dead instance"
    assert c.reconnects == 0, "reconnecting waits for the next call"
    with pytest.raises(tensord.Error, match="restart") as e:
        old.release()
    assert e.value.code_name == "FAILED_PRECONDITION"
    old.release()  # once released (even refused), a second release does nothing
    with pytest.raises(tensord.Error, match="restart") as e:
        pending.seal()
    assert e.value.code_name == "FAILED_PRECONDITION"
    assert old.data_ptr != 0, "the old mapping stays: reading a stale view must not crash"

    # The same client object works on the new daemon: one reconnect, then plain calls.
    assert isinstance(c.ls(), list)
    assert c.reconnects == 1
    fresh = np.full(256, 7, dtype=np.int32)
    c.put("after", fresh)
    t = c.get("after")
    assert t.valid
    assert np.array_equal(np.asarray(t), fresh)
    assert c.stat("after")["sealed"]
    assert c.reconnects == 1
    # Nothing of the old session reached the new daemon: only this lease is held there.
    assert c.stats()["leases"] == 1
    del t, old, pending
    gc.collect()
    assert c.stats()["leases"] == 0
    c.close()


def test_a_durable_tensor_survives_kill_9_with_its_bytes(restartable):
    c = tensord.Client(restartable.socket)
    data = (np.arange(1 << 16, dtype=np.int64) * 2654435761) % 1000003
    c.put("durable", data, durability="durable")
    pending = c.create("unsealed", (4096,), "uint8")  # kept unsealed until the kill
    held = c.get("durable")

    restartable.kill9()
    restartable.start()

    info = c.stat("durable")  # the same client: it reconnects by itself
    assert c.reconnects == 1
    assert info["sealed"] and info["durability"] == "durable" and info["shape"] == (1 << 16,)
    again = c.get("durable")
    assert again.valid
    assert np.array_equal(np.asarray(again), data), "a DURABLE tensor keeps its bytes"
    assert wait_invalid(held), "the lease from before the restart is not the new one"
    with pytest.raises(tensord.Error) as e:
        c.stat("unsealed")
    assert e.value.code_name == "NOT_FOUND", "unsealed creates of the dead instance are gone"
    assert c.reconnects == 1
    assert not pending.valid
    del again, held, pending
    gc.collect()
    c.close()


def test_stale_writes_after_a_restart_never_reach_the_new_instance(restartable):
    """A tensor being filled when the daemon dies: its memory is free in the next instance and
    may hold someone else's tensor there. Writes through the old view must not reach it, while
    reads through an old view of a restored DURABLE tensor still see its bytes."""
    c = tensord.Client(restartable.socket)
    weights = np.arange(1 << 14, dtype=np.float32)
    c.put("weights", weights, durability="durable")
    view_of_weights = np.asarray(c.get("weights"))  # e.g. a model's parameter view
    pending = c.create("unsealed", (1 << 16,), "uint8")
    stale = np.asarray(pending)  # a writer's view of memory the next instance may reuse

    restartable.kill9()
    restartable.start()
    assert wait_invalid(pending)

    other = tensord.Client(restartable.socket)
    fresh = np.full(1 << 16, 0x5A, dtype=np.uint8)
    other.put("fresh", fresh, durability="durable")  # likely where "unsealed" was
    stale[:] = 0xFF  # the old writer carries on
    got = np.asarray(other.get("fresh"))
    assert np.array_equal(got, fresh), "a stale writer changed another tensor's bytes"
    assert np.array_equal(view_of_weights, weights), "old views of restored tensors still read"
    del got, view_of_weights, stale, pending
    gc.collect()
    other.close()
    c.close()


def test_a_call_waits_for_the_daemon_to_come_back(restartable):
    c = tensord.Client(restartable.socket, reconnect_timeout=20.0)
    c.put("x", np.ones(16, dtype=np.float32))
    restartable.kill9()
    # The new instance starts a little later, while a call is already waiting for it.
    starter = threading.Timer(0.5, restartable.spawn)
    starter.start()
    try:
        began = time.monotonic()
        listed = c.ls()  # blocks, retrying with backoff, until the new daemon takes a session
        waited = time.monotonic() - began
    finally:
        starter.join()
    assert isinstance(listed, list)
    assert c.reconnects == 1
    assert waited >= 0.4, f"returned after {waited:.2f} s, before the daemon was back"
    c.close()


def test_reconnect_timeout_0_leaves_the_session_dead(restartable):
    c = tensord.Client(restartable.socket, reconnect_timeout=0)
    c.put("y", np.ones(16, dtype=np.float32))
    restartable.kill9()
    restartable.start()
    with pytest.raises(tensord.Error) as e:
        c.get("y")  # on the dead session: the new daemon does not know it
    assert e.value.code_name in ("FAILED_PRECONDITION", "UNAVAILABLE")
    assert c.reconnects == 0
    c.close()


def test_a_stopped_daemon_fails_a_call_after_reconnect_timeout(restartable):
    c = tensord.Client(restartable.socket, reconnect_timeout=0.5)
    restartable.kill9()
    began = time.monotonic()
    with pytest.raises(tensord.Error) as e:
        c.ls()
    waited = time.monotonic() - began
    assert e.value.code_name == "UNAVAILABLE"
    assert 0.4 <= waited < 10, waited
    assert c.reconnects == 0
    c.close()
