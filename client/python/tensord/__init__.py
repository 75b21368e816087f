"""tensord: zero-copy tensors from the tensord memory daemon.

    import tensord, torch
    with tensord.Client("run/tensord.sock") as c:
        c.put("w", torch.randn(4, 4))
        w = torch.from_dlpack(c.get("w"))   # the daemon's shared memory, no copy

A `Tensor` returned by `get` holds a lease: the bytes stay put and unchanged while the object,
or any numpy array / torch tensor made from it, is alive; the lease ends when the last of them
is garbage-collected. Sealed tensors are immutable: numpy views are read-only; torch has no
read-only tensors, so do not write through a torch view of a sealed tensor.

A Client survives daemon restarts: its next call opens a new session (retrying with backoff
for up to `reconnect_timeout` seconds) and `client.reconnects` counts how often it did.
Sessions are not restored: a Tensor leased or created before the restart reports
`.valid == False` (its memory may be reused by the new daemon: get it again), and its
`.release()`, `.seal()` and `.abort()` raise tensord.Error (FAILED_PRECONDITION).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from ._core import Error, Tensor, _Client

__all__ = ["Client", "Error", "Tensor"]

try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy comes with the Debian packages we depend on
    _np = None
try:
    import torch as _torch
except ImportError:
    _torch = None

_NUMPY_NAMES = {
    "float32": "float32", "float16": "float16", "float64": "float64", "int8": "int8",
    "uint8": "uint8", "int16": "int16", "int32": "int32", "int64": "int64", "bool": "bool",
}


def _torch_name(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    if name not in _NUMPY_NAMES and name != "bfloat16":
        raise TypeError(f"tensord cannot store torch dtype {dtype}")
    return name


def _numpy(self: Tensor):
    """Returns a numpy array over the tensor's shared memory (no copy)."""
    return _np.asarray(self)


def _as_torch(self: Tensor):
    """Returns a torch tensor over the tensor's shared memory (no copy)."""
    t = _torch.from_dlpack(self)
    return t.view(_torch.bool) if self.dtype == "bool" else t


Tensor.numpy = _numpy
Tensor.torch = _as_torch


class Client:
    """A session with a tensord daemon. Use as a context manager, or call close()."""

    def __init__(self, socket: Optional[str] = None, namespace: str = "",
                 name: str = "python", timeout: float = 10.0, *,
                 reconnect_timeout: float = 30.0):
        """Connects now (no retry: raises tensord.Error if no daemon answers within `timeout`
        seconds, the deadline of every call). Later, when the daemon restarts, a call waits up
        to `reconnect_timeout` seconds for it to come back (0: never reconnect)."""
        self._c = _Client(socket, namespace, name, timeout, float(reconnect_timeout))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Ends the session once no Tensor of this client is alive any more."""
        self._c.close()

    @property
    def reconnects(self) -> int:
        """How many times this client replaced a session lost to a daemon restart."""
        return self._c.reconnects

    def create(self, key: str, shape: Sequence[int], dtype: str, *, durability: str = "durable",
               pool: str = "", scope: str = "global", ttl: Optional[float] = None,
               device: str = "cpu", compression: str = "default", parent: str = "",
               error_budget: float = 0.0, codecs: Sequence[str] = ()) -> Tensor:
        """Allocates a tensor and returns it writable; fill it (numpy.asarray / torch.from_dlpack)
        and call .seal() to publish it. device "cuda[:N]" creates it in the daemon's GPU arena
        (fill it through torch.from_dlpack, then .seal(stream=...)). `compression` says how the
        daemon may store its swap copy: "default" (the pool class's), "none", "lossless", or
        "lossy" within `error_budget` (the largest relative RMSE, e.g. 0.01) using any codec or
        those in `codecs` ("fp8_e4m3", "int8", "int4_g64", ...). `parent` names the key this
        tensor continues (a KV prefix chain's previous block): a hint for eviction."""
        return self._c.create(key, list(shape), dtype, durability, pool, scope, ttl or 0.0,
                              device, compression, parent, error_budget, list(codecs))

    def put(self, key: str, value, *, durability: str = "durable", pool: str = "",
            scope: str = "global", ttl: Optional[float] = None,
            compression: str = "default", parent: str = "", error_budget: float = 0.0,
            codecs: Sequence[str] = ()) -> Tensor:
        """Stores a torch tensor or anything numpy accepts under `key` (one copy, into shared
        memory) and seals it. `ttl` in seconds deletes it that long after sealing."""
        if _torch is not None and isinstance(value, _torch.Tensor):
            src = value.detach().cpu()
            t = self.create(key, src.shape, _torch_name(src.dtype), durability=durability,
                            pool=pool, scope=scope, ttl=ttl, compression=compression,
                            parent=parent, error_budget=error_budget, codecs=codecs)
            try:
                dst = _torch.from_dlpack(t)
                dst.copy_(src.view(_torch.uint8) if src.dtype == _torch.bool else src)
                del dst
            except BaseException:
                t.abort()
                raise
        else:
            src = _np.ascontiguousarray(value)
            name = _NUMPY_NAMES.get(src.dtype.name)
            if name is None:
                raise TypeError(f"tensord cannot store numpy dtype {src.dtype}")
            t = self.create(key, src.shape, name, durability=durability, pool=pool,
                            scope=scope, ttl=ttl, compression=compression, parent=parent,
                            error_budget=error_budget, codecs=codecs)
            try:
                _np.copyto(_np.asarray(t), src, casting="no")
            except BaseException:
                t.abort()
                raise
        t.seal()
        return t

    def get(self, key: str, device: str = "cpu") -> Tensor:
        """Leases a sealed tensor. device "cpu" (host shared memory) or "cuda[:N]" (the daemon's
        GPU arena, copied up first if needed; torch.from_dlpack() gives a CUDA tensor)."""
        return self._c.get(key, device)

    def get_many(self, keys: Iterable[str], device: str = "cpu") -> list:
        """Leases many tensors in one round trip; raises on the first failing key."""
        return self._c.get_many(list(keys), device)

    def prefetch(self, keys: Iterable[str], device: str = "cpu") -> list:
        """Promotes tensors to host ("cpu") or to the daemon's GPU ("cuda[:N]") without leasing
        them, so that the next get finds them there. Returns when the moves are done: one dict
        per key with "key", "ok", "moved" (False: it was there already), "code", "message"."""
        return self._c.prefetch(list(keys), device)

    def hint(self, keys: Iterable[str], device: str = "cpu", ttl: float = 0.0) -> dict:
        """Look-ahead: the next requests will read `keys`, in this order. The daemon guards the
        first ones (as many as fit its hint share of the tier) against eviction and promotes
        them to host ("cpu") or its GPU ("cuda[:N]") ahead of use. A hint ends when its key is
        read, deleted, or `ttl` seconds pass (0: the daemon's default, 30 s; at most 3600).
        Returns at once: {"accepted", "refreshed", "unknown", "dropped", "remote"} key
        counts ("remote": not here, looked up in the remote tier and queued when found)."""
        if not 0 <= ttl <= 3600:
            raise ValueError(f"hint ttl {ttl}: 0 (the daemon's default) to 3600 seconds")
        return self._c.hint(list(keys), device, float(ttl))

    def delete(self, key: str) -> None:
        """Deletes a sealed tensor; leased copies stay valid until released."""
        self._c.delete(key)

    def evict(self, key: str) -> str:
        """Moves one unleased tensor one tier down now (GPU -> host -> SSD; a CACHE tensor with
        nowhere to go is dropped), through the codec stage; returns what happened, e.g.
        "demoted to SSD"."""
        return self._c.evict(key)

    def stat(self, key: str) -> dict:
        return self._c.stat(key)

    def ls(self, prefix: str = "", limit: int = 0) -> list:
        """Returns metadata dicts of the tensors whose key starts with `prefix`."""
        return self._c.ls(prefix, limit)

    def stats(self) -> dict:
        """Returns the daemon's statistics: tiers, pools, counters, sessions, leases,
        pressure, and swap (the SSD tier's device, or None without one)."""
        return self._c.stats()

    def segment(self, arena: int) -> tuple:
        """Returns (address, size) of this process's mapping of a shared-memory segment."""
        return self._c.segment(arena)
