"""pytest fixtures: a real tensord on a private socket, started and stopped by pid."""

import os
import signal
import subprocess
import sys
import time

import pytest

import tensord

TENSORD_BIN = os.environ.get("TENSORD_BIN", "build/daemon/tensord")


def wait_serving(proc, sock):
    """Waits up to 20 s until the daemon `proc` takes sessions on `sock`; fails the test if not."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if os.path.exists(sock):
            try:
                tensord.Client(sock, timeout=0.5).close()
                return
            except tensord.Error:
                pass
        if proc.poll() is not None:
            pytest.fail(f"tensord exited with {proc.returncode} at start")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("tensord did not start")


def _serve(run_dir, *extra):
    """Starts tensord (256 MiB host tier, plus `extra` flags), yields its socket, stops it."""
    proc = subprocess.Popen([TENSORD_BIN, "--run-dir", str(run_dir), "--host-capacity", "256MiB",
                             "--log-level", "warn", "--no-prefault", *extra])
    sock = str(run_dir / "tensord.sock")
    wait_serving(proc, sock)
    yield sock
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, "tensord did not stop cleanly"
    # A clean stop keeps the tensors left for a warm restart; the test is over: forget them.
    subprocess.run([TENSORD_BIN, "--forget", "--log-level", "error", "--run-dir", str(run_dir)],
                   check=True, capture_output=True)


@pytest.fixture
def daemon(tmp_path):
    """A tensord with a 256 MiB host tier; yields its socket path."""
    yield from _serve(tmp_path / "run")


@pytest.fixture
def swap_daemon(tmp_path):
    """A tensord with a 256 MiB host tier and a 1 GiB swap file; yields its socket path."""
    swap = tmp_path / "swap"
    yield from _serve(tmp_path / "run", "--swap-file", str(swap), "--swap-size", "1GiB")
    swap.unlink(missing_ok=True)  # pytest keeps recent tmp_paths; not 1 GiB of them


def run_python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter (another process) with the same sys.path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)
