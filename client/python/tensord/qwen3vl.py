"""A Qwen3-VL-shaped vision-language model in plain PyTorch, for serving through tensord.

Vision encoder (patch embedding, ViT blocks, a 2x2 patch merger into the language model's width)
and a Qwen3 decoder (GQA attention with RoPE and QK-norm, SwiGLU MLP, RMSNorm). Parameter names
follow the Hugging Face checkpoints (`model.visual.*`, `model.language_model.*`), so a real
checkpoint's state dict loads by name. Simplified against the real model, and said here:
1-D RoPE over all positions (Qwen3-VL: interleaved 3-D MRoPE), no RoPE inside the vision encoder,
no DeepStack injection of intermediate vision layers; a still image is repeated over the two
temporal patch frames as Qwen does.

The prompt is always run in chunks whose boundaries sit at multiples of `prefill_chunk` from
position 0, with and without a KV cache; a block of reused KV therefore holds exactly the bits
a fresh prefill computes, and outputs with reused KV equal the plain model's bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VisionConfig", "TextConfig", "Qwen3VLConfig", "PRESETS", "Qwen3VL", "Output",
           "load_safetensors", "save_safetensors", "load_checkpoint", "read_checkpoint"]


@dataclass(frozen=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    num_position_embeddings: int = 2304  # a 48 x 48 grid, interpolated to each image's grid


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 5_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True


@dataclass(frozen=True)
class Qwen3VLConfig:
    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    prefill_chunk: int = 256  # prompt tokens per forward step; KV blocks must be multiples
    dtype: str = "float32"    # parameter dtype: float32 or bfloat16

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "Qwen3VLConfig":
        return Qwen3VLConfig(text=TextConfig(**d["text"]), vision=VisionConfig(**d["vision"]),
                             **{k: v for k, v in d.items() if k not in ("text", "vision")})

    def replace(self, **kw) -> "Qwen3VLConfig":
        return dataclasses.replace(self, **kw)


# Qwen3-VL-2B-Instruct's published config.json: 28 decoder layers of width 2048, 16 query heads
# and 8 KV heads of dim 128, SwiGLU 6144, vocab 151936, tied embeddings; a 24-block ViT of width
# 1024 (16 heads, MLP 4096, 16 px patches, 2x2 merge into 2048).
PRESETS: Dict[str, Qwen3VLConfig] = {
    "qwen3-vl-2b": Qwen3VLConfig(
        text=TextConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                        head_dim=128),
        vision=VisionConfig(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                            out_hidden_size=2048),
        image_token_id=151655, prefill_chunk=256, dtype="bfloat16"),
    # Same structure, small enough for 2 CPU cores: 4 layers of width 256, GQA 4:2, head dim 64.
    "tiny": Qwen3VLConfig(
        text=TextConfig(vocab_size=4096, hidden_size=256, intermediate_size=768,
                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=64, rope_theta=1_000_000.0),
        vision=VisionConfig(depth=2, hidden_size=128, intermediate_size=512, num_heads=4,
                            out_hidden_size=256, num_position_embeddings=256),
        image_token_id=4095, prefill_chunk=64),
}


@dataclass
class Output:
    """What a forward returns: logits of the last `logits_to_keep` positions (all when 0), the
    KV cache after the call (per layer (K, V), each (kv_heads, tokens, head_dim)), and the image
    features used (one (tokens, hidden) tensor per image)."""
    logits: torch.Tensor
    past: List[Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    image_features: List[torch.Tensor] = field(default_factory=list)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight


def _rope_tables(start: int, n: int, c: TextConfig, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns (cos, sin), each (n, head_dim), for positions start..start+n: computed once per
    forward step and shared by every layer."""
    dim = c.head_dim
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    ang = torch.outer(torch.arange(start, start + n, dtype=torch.float32), inv)
    return (torch.cat([ang.cos(), ang.cos()], -1).to(dtype),
            torch.cat([ang.sin(), ang.sin()], -1).to(dtype))


def _rope(x: torch.Tensor, rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotates (heads, tokens, dim) by the tables of _rope_tables (rotate-half convention)."""
    cos, sin = rope
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class Attention(nn.Module):
    def __init__(self, c: TextConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(bias=False, device=device, dtype=dtype)
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, **kw)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, **kw)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, **kw)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, **kw)
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device, dtype)
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, device, dtype)

    def forward(self, x, start: int, past: Optional[Tuple[torch.Tensor, torch.Tensor]], rope):
        c, n = self.c, x.shape[0]
        q = self.q_norm(self.q_proj(x).view(n, c.num_attention_heads, c.head_dim)).transpose(0, 1)
        k = self.k_norm(self.k_proj(x).view(n, c.num_key_value_heads, c.head_dim)).transpose(0, 1)
        v = self.v_proj(x).view(n, c.num_key_value_heads, c.head_dim).transpose(0, 1)
        q, k = _rope(q, rope), _rope(k, rope).contiguous()
        v = v.contiguous()
        if past is not None:
            k, v = torch.cat([past[0], k], 1), torch.cat([past[1], v], 1)
        group = c.num_attention_heads // c.num_key_value_heads
        kk, vv = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        scores = torch.matmul(q, kk.transpose(1, 2)) / math.sqrt(c.head_dim)
        total = k.shape[1]
        qpos = torch.arange(start, start + n).unsqueeze(1)
        mask = torch.arange(total).unsqueeze(0) > qpos
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores.float(), -1).to(v.dtype), vv)
        return self.o_proj(out.transpose(0, 1).reshape(n, -1)), (k, v)


class DecoderLayer(nn.Module):
    def __init__(self, c: TextConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(bias=False, device=device, dtype=dtype)
        self.self_attn = Attention(c, device, dtype)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, **kw)
        self.mlp.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, **kw)
        self.mlp.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, **kw)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device, dtype)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, device, dtype)

    def forward(self, x, start, past, rope):
        a, kv = self.self_attn(self.input_layernorm(x), start, past, rope)
        x = x + a
        h = self.post_attention_layernorm(x)
        m = self.mlp
        return x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h)), kv


class VisionBlock(nn.Module):
    def __init__(self, c: VisionConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.c = c
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=1e-6, **kw)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=1e-6, **kw)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size, **kw)
        self.attn.proj = nn.Linear(c.hidden_size, c.hidden_size, **kw)
        self.mlp = nn.Module()
        self.mlp.linear_fc1 = nn.Linear(c.hidden_size, c.intermediate_size, **kw)
        self.mlp.linear_fc2 = nn.Linear(c.intermediate_size, c.hidden_size, **kw)

    def forward(self, x):
        n, d, h = x.shape[0], self.c.hidden_size, self.c.num_heads
        q, k, v = self.attn.qkv(self.norm1(x)).view(n, 3, h, d // h).permute(1, 2, 0, 3)
        att = torch.softmax(torch.matmul(q, k.transpose(1, 2)).float() / math.sqrt(d // h), -1)
        x = x + self.attn.proj(torch.matmul(att.to(v.dtype), v).transpose(0, 1).reshape(n, d))
        return x + self.mlp.linear_fc2(F.gelu(self.mlp.linear_fc1(self.norm2(x)),
                                              approximate="tanh"))


class VisionModel(nn.Module):
    def __init__(self, c: VisionConfig, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.c = c
        self.patch_embed = nn.Module()
        # Stored as Conv3d(3, D, (T, P, P), stride = kernel) like the checkpoints; applied as the
        # equivalent matmul over flattened patches.
        self.patch_embed.proj = nn.Conv3d(
            c.in_channels, c.hidden_size, (c.temporal_patch_size, c.patch_size, c.patch_size),
            stride=(c.temporal_patch_size, c.patch_size, c.patch_size), **kw)
        self.pos_embed = nn.Embedding(c.num_position_embeddings, c.hidden_size, **kw)
        self.blocks = nn.ModuleList(VisionBlock(c, device, dtype) for _ in range(c.depth))
        m = c.spatial_merge_size ** 2 * c.hidden_size
        self.merger = nn.Module()
        self.merger.norm = nn.LayerNorm(c.hidden_size, eps=1e-6, **kw)
        self.merger.linear_fc1 = nn.Linear(m, m, **kw)
        self.merger.linear_fc2 = nn.Linear(m, c.out_hidden_size, **kw)

    def tokens_for(self, height: int, width: int) -> int:
        """Returns how many language-model tokens an image of height x width becomes."""
        unit = self.c.patch_size * self.c.spatial_merge_size
        if height % unit or width % unit:
            raise ValueError(f"image sides must be multiples of {unit}, not {height}x{width}")
        return (height // unit) * (width // unit)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Encodes one image (3, H, W) into (tokens_for(H, W), out_hidden_size) features."""
        c = self.c
        _, hh, ww = image.shape
        self.tokens_for(hh, ww)
        p, m, t = c.patch_size, c.spatial_merge_size, c.temporal_patch_size
        gh, gw = hh // p, ww // p
        x = image.to(self.pos_embed.weight.dtype).unsqueeze(1).expand(-1, t, -1, -1)
        # (C, T, gh/m, m, p, gw/m, m, p) -> patches in merge-window order, each (C, T, p, p).
        x = x.reshape(c.in_channels, t, gh // m, m, p, gw // m, m, p)
        x = x.permute(2, 5, 3, 6, 0, 1, 4, 7).reshape(gh * gw, -1)
        w = self.patch_embed.proj.weight
        x = F.linear(x, w.reshape(w.shape[0], -1), self.patch_embed.proj.bias)
        side = int(math.isqrt(c.num_position_embeddings))
        grid = self.pos_embed.weight.view(side, side, -1).permute(2, 0, 1).unsqueeze(0)
        pos = F.interpolate(grid.float(), size=(gh, gw), mode="bilinear", align_corners=False)
        pos = pos[0].permute(1, 2, 0).reshape(gh // m, m, gw // m, m, -1)
        x = x + pos.permute(0, 2, 1, 3, 4).reshape(gh * gw, -1).to(x.dtype)
        for b in self.blocks:
            x = b(x)
        x = self.merger.norm(x).view(-1, m * m * c.hidden_size)
        return self.merger.linear_fc2(F.gelu(self.merger.linear_fc1(x)))


class TextModel(nn.Module):
    def __init__(self, c: TextConfig, device=None, dtype=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(DecoderLayer(c, device, dtype)
                                    for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, device, dtype)


class Qwen3VL(nn.Module):
    """The model. `model(input_ids, pixel_values=...)` runs a prompt; `generate` decodes."""

    def __init__(self, config: Qwen3VLConfig, *, seed: Optional[int] = 0, device=None,
                 state_dict: Optional[Dict[str, torch.Tensor]] = None):
        """Builds the model with deterministic random weights from `seed`, or from `state_dict`
        (names as in Hugging Face checkpoints). device="meta" allocates nothing (attach shared
        weights with tensord.torch.attach_weights before use)."""
        super().__init__()
        self.config = config
        dtype = getattr(torch, config.dtype)
        self.model = nn.Module()
        self.model.visual = VisionModel(config.vision, device, dtype)
        self.model.language_model = TextModel(config.text, device, dtype)
        if not config.text.tie_word_embeddings:
            self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False,
                                     device=device, dtype=dtype)
        if state_dict is not None:
            load_checkpoint(self, state_dict)
        elif seed is not None and str(device) != "meta":
            self._init_weights(seed)

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm1.weight") or \
                    name.endswith("norm2.weight") or name.endswith("_norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                std = 0.02 if p.dim() < 2 else 1.0 / math.sqrt(p[0].numel())
                p.normal_(0.0, std, generator=g)  # in place: no temporary as large as p

    @property
    def visual(self) -> VisionModel:
        return self.model.visual

    def image_token_count(self, image: torch.Tensor) -> int:
        return self.visual.tokens_for(image.shape[-2], image.shape[-1])

    def encode_images(self, pixel_values) -> List[torch.Tensor]:
        """Returns the vision features of each image of `pixel_values` ((N, 3, H, W) or a list)."""
        with torch.no_grad():
            return [self.visual(img) for img in _images(pixel_values)]

    def embed(self, input_ids: torch.Tensor, image_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Returns (tokens, hidden) input embeddings: token embeddings with each run of image
        placeholder tokens replaced, in order, by one image's features."""
        ids = _ids(input_ids)
        x = F.embedding(ids, self.model.language_model.embed_tokens.weight)
        where = (ids == self.config.image_token_id).nonzero().flatten()
        need = sum(f.shape[0] for f in image_features)
        if where.numel() != need:
            raise ValueError(f"{where.numel()} image tokens in input_ids, {need} image features")
        if need:
            x = x.clone()
            x[where] = torch.cat(list(image_features)).to(x.dtype)
        return x

    def extend(self, embeds: torch.Tensor, past: Optional[list] = None,
               logits_to_keep: int = 1) -> Output:
        """Runs `embeds` (tokens, hidden) after the `past` KV cache, in chunks aligned to
        multiples of prefill_chunk, and returns the last `logits_to_keep` logits (0: all)."""
        lm, c = self.model.language_model, self.config
        start = past[0][0].shape[1] if past else 0
        past = list(past) if past else [None] * len(lm.layers)
        hidden, i, n = [], 0, embeds.shape[0]
        with torch.no_grad():
            while i < n:
                pos = start + i
                step = min(n - i, c.prefill_chunk - pos % c.prefill_chunk)
                x = embeds[i:i + step]
                rope = _rope_tables(pos, step, c.text, x.dtype)
                for li, layer in enumerate(lm.layers):
                    x, past[li] = layer(x, pos, past[li], rope)
                hidden.append(x)
                i += step
            h = torch.cat(hidden)
            if logits_to_keep:
                h = h[-logits_to_keep:]
            w = lm.embed_tokens.weight if c.text.tie_word_embeddings else self.lm_head.weight
            logits = F.linear(lm.norm(h), w).float()
        return Output(logits=logits, past=past)

    def forward(self, input_ids, pixel_values=None, *, past: Optional[list] = None,
                image_features: Optional[Sequence[torch.Tensor]] = None,
                logits_to_keep: int = 1) -> Output:
        """Runs a prompt (batch 1: input_ids (L,) or (1, L) with image placeholders) and returns
        Output. With `past`, input_ids are the tokens after it and carry no images."""
        if image_features is None:
            image_features = self.encode_images(pixel_values) if pixel_values is not None else []
        out = self.extend(self.embed(input_ids, image_features), past, logits_to_keep)
        out.image_features = list(image_features)
        return out

    def generate(self, input_ids, pixel_values=None, max_new_tokens: int = 8,
                 on_token: Optional[Callable[[int], None]] = None) -> List[int]:
        """Greedy decoding; returns the new tokens. on_token(t) is called as each one appears."""
        return greedy(self, input_ids, pixel_values, max_new_tokens, on_token)


def greedy(model, input_ids, pixel_values, max_new_tokens: int, on_token=None) -> List[int]:
    """Greedy decoding with any callable that returns Output (the plain or the optimized model)."""
    out = model(input_ids, pixel_values=pixel_values)
    tokens: List[int] = []
    base = getattr(model, "base_model", model)
    while True:
        t = int(out.logits[-1].argmax())
        tokens.append(t)
        if on_token is not None:
            on_token(t)
        if len(tokens) >= max_new_tokens:
            return tokens
        out = base.extend(F.embedding(torch.tensor([t]),
                                      base.model.language_model.embed_tokens.weight), out.past)


def _ids(input_ids) -> torch.Tensor:
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError("batch size 1 only: one request per call")
        ids = ids[0]
    return ids


def _images(pixel_values) -> List[torch.Tensor]:
    if pixel_values is None:
        return []
    if isinstance(pixel_values, torch.Tensor):
        return list(pixel_values) if pixel_values.dim() == 4 else [pixel_values]
    return list(pixel_values)


# --- checkpoints ------------------------------------------------------------------------------

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """Reads a .safetensors file (8-byte little-endian header size, JSON header, raw bytes;
    Debian bookworm has no python3-safetensors). Tensors are views of one read-only mapping."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 << 20:
            raise ValueError(f"{path}: safetensors header of {size} bytes")
        header = json.loads(f.read(size))
    data = torch.from_file(path, shared=False, size=8 + size + max(
        [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"] or [0]),
        dtype=torch.uint8)[8 + size:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: {name} has unsupported dtype {e['dtype']}")
        lo, hi = e["data_offsets"]
        dt = _ST_DTYPES[e["dtype"]]
        t = data[lo:hi]
        out[name] = (t.view(dt) if hi > lo else torch.empty(0, dtype=dt)).reshape(e["shape"])
    return out


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str) -> None:
    """Writes tensors in the safetensors format (as Hugging Face checkpoints are stored)."""
    names = {v: k for k, v in _ST_DTYPES.items()}
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def read_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """Reads a checkpoint as Hugging Face publishes one: a directory with
    model.safetensors.index.json and its shards, or with *.safetensors files, or a single
    .safetensors file, or a torch state_dict file (pytorch_model.bin / .pt)."""
    import os
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            bins = [f for f in ("pytorch_model.bin", "model.pt") if
                    os.path.exists(os.path.join(path, f))]
            if not bins:
                raise FileNotFoundError(f"{path}: no safetensors or pytorch_model.bin")
            return read_checkpoint(os.path.join(path, bins[0]))
        out: Dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_safetensors(os.path.join(path, f)))
        return out
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    return torch.load(path, map_location="cpu")


def load_checkpoint(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Copies a checkpoint's tensors into `model` by name. Keys the simplified model lacks
    (DeepStack mergers, lm_head when tied) are ignored; a missing or mis-shaped one raises."""
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    with torch.no_grad():
        for k, p in own.items():
            src = state_dict[k]
            if tuple(src.shape) != tuple(p.shape):
                raise ValueError(f"{k}: checkpoint shape {tuple(src.shape)}, model {tuple(p.shape)}")
            if p.is_meta:
                raise ValueError("load a checkpoint into a model built on a real device")
            p.copy_(src)
