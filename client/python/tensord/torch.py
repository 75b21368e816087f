"""tensord.torch: serve a PyTorch model's memory through tensord.

    model = create_optimized_model(base_model=original_model,
                                   hardware_config={'memory_size': 8 * 1024**3})
    outputs = model(input_ids, pixel_values=pixel_values)   # used exactly like the original

- share_weights / attach_weights: one copy of every parameter in the daemon's shared memory;
  each process's parameters become zero-copy, read-only views of it (a model built on the
  `meta` device never allocates a private copy).
- FeatureCache: vision features keyed by the image's bytes and the encoder; a hit in any
  process skips the vision encoder.
- PrefixKVCache: paged KV blocks (default 256 tokens, every layer's K and V in one tensor) keyed
  by the chained hash of their tokens as vLLM and LMCache key them, each naming its parent
  block on Create; a lookup returns the longest cached prefix.

The model is expected to offer the Qwen3VL interface of tensord.qwen3vl (embed, extend,
encode/visual, config with prefill_chunk). Do not write through attached weights or through
leased blocks: torch has no read-only tensors, and they are every process's shared bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from . import Client, Error
from .qwen3vl import Output, _ids, _images

__all__ = ["WeightsNotShared", "share_weights", "attach_weights", "load_or_share_weights",
           "shared_fingerprint", "FeatureCache",
           "PrefixKVCache", "OptimizedModel", "create_optimized_model"]

_MANIFEST = "manifest"


_HINT_KEYS_PER_CALL = 65536  # the daemon's limit per Hint call

class WeightsNotShared(LookupError):
    """No process has shared weights under the prefix (yet)."""


def _named_tensors(model: nn.Module) -> List[Tuple[str, torch.Tensor, bool]]:
    """Returns (name, tensor, is_parameter) for every parameter and buffer, shared ones once."""
    seen, out = set(), []
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p, True))
    for name, b in model.named_buffers():
        if b is not None and id(b) not in seen:
            seen.add(id(b))
            out.append((name, b, False))
    return out


def _fingerprint(tensors) -> str:
    """A digest of names, shapes, dtypes and 16 evenly spaced 4 KiB samples of each tensor's
    bytes: tells differently initialised or fine-tuned models apart without hashing gigabytes."""
    h = hashlib.blake2b(digest_size=16)
    for name, t, _ in tensors:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
        step = max(4096, raw.numel() // 16)
        for off in range(0, raw.numel(), step):
            h.update(raw[off:off + 4096].numpy().tobytes())
    return h.hexdigest()


def _layout(tensors) -> List[list]:
    return [[name, list(t.shape), str(t.dtype).replace("torch.", "")] for name, t, _ in tensors]


def _replace(model: nn.Module, name: str, is_param: bool, lease) -> None:
    """Makes `name` a zero-copy view of a leased tensor (the view holds the lease)."""
    owner = model
    *path, leaf = name.split(".")
    for part in path:
        owner = getattr(owner, part)
    view = lease.torch()
    if is_param:
        owner._parameters[leaf] = nn.Parameter(view, requires_grad=False)
    else:
        owner._buffers[leaf] = view


def _is_miss(e: Error) -> bool:
    """A cache read that may simply be retried or recomputed: absent, not sealed yet (another
    process is writing it), no room to bring it back, or the daemon busy."""
    return e.code_name in ("NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                           "UNAVAILABLE", "DEADLINE_EXCEEDED")


def share_weights(model: nn.Module, prefix: str, client: Client) -> int:
    """Puts every parameter and buffer of `model` into tensord (DURABLE, keys prefix + name),
    attaching each to its shared copy as soon as it is stored (so at most one tensor exists
    twice), then publishes a manifest (layout and fingerprint). One process writes a prefix at
    a time: the writer holds an unsealed `prefix + "lock"`, which the daemon drops if the writer
    dies. Raises WeightsNotShared if another process is writing. Returns the bytes stored."""
    tensors = _named_tensors(model)
    if any(t.is_meta for _, t, _ in tensors):
        raise ValueError("share_weights needs real weights; a meta model uses attach_weights")
    try:
        lock = client.create(prefix + "lock", [1], "uint8", durability="cache", scope="session")
    except Error as e:
        if e.code_name == "ALREADY_EXISTS":
            raise WeightsNotShared(f"another process is sharing weights under '{prefix}'")
        raise
    try:
        fingerprint = _fingerprint(tensors)  # of this model's bytes, before they move
        stored = 0
        for name, t, is_param in tensors:
            try:
                lease = client.put(prefix + name, t.detach(), durability="durable")
            except Error as e:
                if e.code_name != "ALREADY_EXISTS":
                    raise
                # Left by a writer that died before its manifest: nobody is attached to it.
                client.delete(prefix + name)
                lease = client.put(prefix + name, t.detach(), durability="durable")
            stored += lease.nbytes
            _replace(model, name, is_param, lease)
        manifest = json.dumps({"layout": _layout(tensors), "fingerprint": fingerprint})
        client.put(prefix + _MANIFEST,
                   torch.frombuffer(bytearray(manifest.encode()), dtype=torch.uint8))
    finally:
        lock.abort()
    return stored


def _manifest(prefix: str, client: Client, timeout: float) -> Optional[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(client.get(prefix + _MANIFEST).numpy().tobytes())
        except Error as e:
            if not _is_miss(e):
                raise
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def shared_fingerprint(prefix: str, client: Client) -> str:
    """Returns the fingerprint of the weights shared under `prefix` (WeightsNotShared if none)."""
    m = _manifest(prefix, client, 0.0)
    if m is None:
        raise WeightsNotShared(f"no weights shared under '{prefix}'")
    return m["fingerprint"]


def attach_weights(model: nn.Module, prefix: str, client: Client, timeout: float = 0.0) -> int:
    """Replaces every parameter and buffer of `model` by a zero-copy view of the shared copy
    under `prefix` (waiting up to `timeout` seconds for another process to publish it). The
    layout must match; a model with real weights must also match the shared weights'
    fingerprint. Raises WeightsNotShared when nothing is shared. Returns the bytes mapped."""
    m = _manifest(prefix, client, timeout)
    if m is None:
        raise WeightsNotShared(f"no weights shared under '{prefix}'")
    tensors = _named_tensors(model)
    if m["layout"] != _layout(tensors):
        raise ValueError(f"the weights under '{prefix}' have another layout than this model")
    if not any(t.is_meta for _, t, _ in tensors) and m["fingerprint"] != _fingerprint(tensors):
        raise ValueError(f"the weights under '{prefix}' differ from this model's own weights; "
                         "share them under another prefix")
    leased = []
    for i in range(0, len(tensors), 1024):  # the daemon takes at most 4096 keys per Get
        leased += client.get_many([prefix + name for name, _, _ in tensors[i:i + 1024]])
    for (name, _, is_param), lease in zip(tensors, leased):
        _replace(model, name, is_param, lease)
    return sum(lease.nbytes for lease in leased)


def load_or_share_weights(model: nn.Module, prefix: str, client: Client,
                          timeout: float = 120.0) -> str:
    """Attaches to weights another process shared, or shares this model's; while another
    process is sharing, waits up to `timeout` for it, and takes over if that writer dies (the
    daemon drops its lock). Returns "attached" or "shared". A meta model only attaches."""
    deadline = time.monotonic() + timeout
    can_share = not any(p.is_meta for p in model.parameters())
    while True:
        try:
            attach_weights(model, prefix, client, min(1.0, max(0.0, deadline - time.monotonic())))
            return "attached"
        except WeightsNotShared:
            pass
        if can_share:
            try:
                share_weights(model, prefix, client)
                return "shared"
            except WeightsNotShared:
                pass  # another process is writing: wait for its manifest
        if time.monotonic() >= deadline:
            raise WeightsNotShared(f"no weights shared under '{prefix}' within {timeout} s")


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p if isinstance(p, (bytes, bytearray)) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class FeatureCache:
    """Vision features in tensord (CACHE), keyed by a hash of the image's bytes and the encoder
    (its config and weight fingerprint), so that any process's hit skips the encoder."""

    def __init__(self, client: Client, prefix: str, encoder_id: str):
        self.client, self.prefix, self.encoder_id = client, prefix, encoder_id
        self.hits = self.misses = 0

    def key(self, image: torch.Tensor) -> str:
        return f"{self.prefix}feat.{_digest(self.encoder_id, image.dtype, tuple(image.shape), _tensor_bytes(image))}"

    def get_or_compute(self, image: torch.Tensor,
                       compute: Callable[[torch.Tensor], torch.Tensor],
                       key: Optional[str] = None) -> torch.Tensor:
        """Returns the image's features: a zero-copy view of the cached ones, or computed and
        stored for the next process. `key`: self.key(image), when the caller has it."""
        key = key or self.key(image)
        try:
            t = self.client.get(key).torch()
            self.hits += 1
            return t
        except Error as e:
            if not _is_miss(e):
                raise
        self.misses += 1
        f = compute(image)
        _put_cache(self.client, key, f)
        return f


def _put_cache(client: Client, key: str, value: torch.Tensor) -> bool:
    """Stores a CACHE tensor; False when it is there already or cannot be stored now."""
    return _create_cache(client, key, value.shape, value.dtype, lambda dst: dst.copy_(value))


def _create_cache(client: Client, key: str, shape, dtype, fill, parent: str = "",
                  compression: Optional[dict] = None) -> bool:
    """Creates a CACHE tensor, lets fill(torch view) write it in place, and seals it; False
    when it is there already or cannot be stored now. `compression`: create's compression,
    error_budget and codecs arguments for its swap copy (default: the pool class's)."""
    try:
        t = client.create(key, shape, str(dtype).replace("torch.", ""), durability="cache",
                          parent=parent, **(compression or {}))
    except Error as e:
        # There already, being written by another process, no room, or the daemon busy: the
        # value stays computed here and the next process computes it again.
        if e.code_name == "ALREADY_EXISTS" or _is_miss(e):
            return False
        raise
    try:
        fill(t.torch())
    except BaseException:
        t.abort()
        raise
    t.seal()
    return True


class PrefixKVCache:
    """Paged prefix KV blocks in tensord. A block of `block_size` tokens is one CACHE tensor
    (layers, 2, kv_heads, block_size, head_dim) holding every layer's K and V, keyed by the
    chained hash of the tokens up to its end (and of the images among them), and created with
    its predecessor as `parent`. Only whole blocks are cached. `compression` (create's
    compression, error_budget, codecs: e.g. {"compression": "lossy", "error_budget": 0.01})
    says how the daemon may encode blocks it swaps out; default: the pool class's setting."""

    def __init__(self, client: Client, prefix: str, model_id: str, block_size: int = 256,
                 compression: Optional[dict] = None):
        self.client, self.prefix, self.model_id, self.block_size = client, prefix, model_id, block_size
        self.compression = dict(compression or {})
        self.hit_blocks = self.lookup_blocks = self.stored_blocks = 0

    def block_keys(self, input_ids, image_runs: Sequence[Tuple[int, int, str]] = ()) -> List[str]:
        """Returns the key of each whole block of `input_ids`. image_runs: (start, length,
        image digest) of each image's placeholder tokens, hashed into the blocks they overlap."""
        ids = _ids(input_ids)
        b, keys, h = self.block_size, [], self.model_id
        for i in range(ids.shape[0] // b):
            lo, hi = i * b, (i + 1) * b
            extra = [f"{s}:{n}:{d}" for s, n, d in image_runs if s < hi and s + n > lo]
            h = _digest(h, _tensor_bytes(ids[lo:hi]), ",".join(extra))
            keys.append(f"{self.prefix}kv.{h}")
        return keys

    def lookup(self, keys: Sequence[str]) -> List[torch.Tensor]:
        """Returns zero-copy views of the longest cached run of blocks from keys[0]."""
        found = []
        for k in keys:
            try:
                found.append(self.client.get(k).torch())
            except Error as e:
                if not _is_miss(e):
                    raise
                break
        return found

    def count(self, looked_up: int, used: int) -> None:
        """Records a request's lookup: blocks it had, blocks it reused."""
        self.lookup_blocks += looked_up
        self.hit_blocks += used

    @staticmethod
    def to_past(blocks: Sequence[torch.Tensor]) -> Optional[list]:
        """Turns blocks into the model's per-layer (K, V) cache (one concatenation per tensor)."""
        if not blocks:
            return None
        return [(torch.cat([blk[l, 0] for blk in blocks], 1),
                 torch.cat([blk[l, 1] for blk in blocks], 1)) for l in range(blocks[0].shape[0])]

    def store(self, keys: Sequence[str], past: list, first: int) -> int:
        """Stores blocks first..len(keys)-1 from `past`; returns how many were new."""
        b, new = self.block_size, 0
        k0 = past[0][0]
        shape = (len(past), 2, k0.shape[0], b, k0.shape[2])

        def fill(i):
            def write(dst):  # straight from the cache into shared memory: one copy
                for layer, (k, v) in enumerate(past):
                    dst[layer, 0].copy_(k[:, i * b:(i + 1) * b])
                    dst[layer, 1].copy_(v[:, i * b:(i + 1) * b])
            return write

        for i in range(first, len(keys)):
            new += _create_cache(self.client, keys[i], shape, k0.dtype, fill(i),
                                 parent=keys[i - 1] if i else "", compression=self.compression)
        self.stored_blocks += new
        return new

    def hint(self, keys: Sequence[str]) -> bool:
        """Tells the daemon which blocks upcoming requests will read, in order (Client.hint):
        it keeps them in RAM and brings them up from SSD ahead of use. False for a client
        without hint (a stand-in in tests)."""
        send = getattr(self.client, "hint", None)
        if send is None:
            return False
        keys = list(keys)
        for i in range(0, len(keys), _HINT_KEYS_PER_CALL):
            send(keys[i:i + _HINT_KEYS_PER_CALL])
        return True


class OptimizedModel(nn.Module):
    """`base_model` with shared weights, cached vision features and reused prefix KV; called
    like the original, with outputs equal to the original's bit for bit."""

    def __init__(self, base_model: nn.Module, client: Client, prefix: str, block_size: int,
                 hardware_config: Optional[dict] = None, kv_compression: Optional[dict] = None):
        super().__init__()
        chunk = base_model.config.prefill_chunk
        if block_size % chunk:
            raise ValueError(f"block_size {block_size} must be a multiple of the model's "
                             f"prefill_chunk {chunk}, or reused KV would differ in its bits")
        self.base_model = base_model
        self.client = client
        self.hardware_config = dict(hardware_config or {})
        self.weights = load_or_share_weights(base_model, prefix + "w.", client)
        # Features and KV depend on the very weights: a re-shared checkpoint gets new keys.
        model_id = _digest(base_model.config.to_json(), prefix, block_size,
                           shared_fingerprint(prefix + "w.", client))
        self.features = FeatureCache(client, prefix, model_id)
        self.kv = PrefixKVCache(client, prefix, model_id, block_size, kv_compression)

    @property
    def config(self):
        return self.base_model.config

    def _image_runs(self, ids: torch.Tensor, images) -> List[Tuple[int, int, str]]:
        """Returns (first placeholder position, tokens, feature key) of each image."""
        runs, pos = [], 0
        image_pos = (ids == self.config.image_token_id).nonzero().flatten().tolist()
        for img in images:
            n = self.base_model.image_token_count(img)
            runs.append((image_pos[pos] if pos < len(image_pos) else -1, n, self.features.key(img)))
            pos += n
        return runs

    def request_keys(self, input_ids, pixel_values=None) -> List[str]:
        """Returns the KV block keys a request will read (for hint)."""
        ids = _ids(input_ids)
        return self.kv.block_keys(ids, self._image_runs(ids, _images(pixel_values)))

    def hint(self, queue: Sequence[Tuple[object, object]]) -> bool:
        """Tells the daemon the blocks of the queued requests ((input_ids, pixel_values) pairs)."""
        return self.kv.hint([k for ids, px in queue for k in self.request_keys(ids, px)])

    def forward(self, input_ids, pixel_values=None, *, logits_to_keep: int = 1) -> Output:
        base, ids = self.base_model, _ids(input_ids)
        images = _images(pixel_values)
        runs = self._image_runs(ids, images)
        feats = [self.features.get_or_compute(img, lambda x: base.encode_images(x)[0], key)
                 for img, (_, _, key) in zip(images, runs)]
        embeds = base.embed(ids, feats)
        keys = self.kv.block_keys(ids, runs)
        blocks = self.kv.lookup(keys) if logits_to_keep else []
        # At least one token is computed, and the logits asked for must be computed too.
        while blocks and (len(blocks) * self.kv.block_size >= ids.shape[0] or
                          ids.shape[0] - len(blocks) * self.kv.block_size < logits_to_keep):
            blocks.pop()
        done = len(blocks) * self.kv.block_size
        self.kv.count(len(keys), len(blocks))
        out = base.extend(embeds[done:], PrefixKVCache.to_past(blocks), logits_to_keep)
        del blocks  # leases end; the concatenated cache holds its own bytes
        self.kv.store(keys, out.past, done // self.kv.block_size)
        out.image_features = [f.clone() for f in feats]  # not views of every process's cache
        return out

    def generate(self, input_ids, pixel_values=None, max_new_tokens: int = 8,
                 on_token: Optional[Callable[[int], None]] = None) -> List[int]:
        from .qwen3vl import greedy
        return greedy(self, input_ids, pixel_values, max_new_tokens, on_token)


def create_optimized_model(base_model: nn.Module, hardware_config: Optional[Dict] = None, *,
                           socket: Optional[str] = None, client: Optional[Client] = None,
                           prefix: Optional[str] = None, block_size: int = 256,
                           kv_compression: Optional[dict] = None) -> OptimizedModel:
    """Wraps `base_model` (a tensord.qwen3vl.Qwen3VL or one with its interface) to serve through
    the tensord daemon at `socket` ($TENSORD_SOCKET, else ./run/tensord.sock). The first process
    shares its weights, later ones attach (a model built on device="meta" needs a sharer).
    `prefix` (default: from the model's config) names its keys; processes serving the same
    model must use the same one. hardware_config is recorded only: tiers and capacities come
    from the daemon's own configuration. `kv_compression` (e.g. {"compression": "lossy",
    "error_budget": 0.01}) lets the daemon encode KV blocks it swaps out (PrefixKVCache)."""
    if client is None:
        client = Client(socket, name="tensord.torch")
    if prefix is None:
        prefix = f"m.{_digest(base_model.config.to_json())[:16]}."
    return OptimizedModel(base_model, client, prefix, block_size, hardware_config, kv_compression)
