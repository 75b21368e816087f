"""A small decoder-only transformer with a KV cache, random weights from a fixed seed (nothing
downloaded). Used by test_kv_cache_sharing.py: process A runs the prompt and stores its
per-layer KV blocks in tensord; process B loads them zero-copy and continues generation.

    python tiny_transformer.py prefill SOCKET   # process A
    python tiny_transformer.py continue SOCKET  # process B
"""

import sys

import torch
import torch.nn.functional as F

import tensord

VOCAB, DIM, HEADS, LAYERS, STEPS = 211, 128, 4, 3, 8
PROMPT = [(i * 37 + 11) % VOCAB for i in range(48)]


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.out = torch.nn.Linear(DIM, DIM)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(DIM, 4 * DIM), torch.nn.GELU(),
                                       torch.nn.Linear(4 * DIM, DIM))
        self.ln1, self.ln2 = torch.nn.LayerNorm(DIM), torch.nn.LayerNorm(DIM)

    def forward(self, x, past):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(DIM, dim=-1)
        split = lambda z: z.view(b, t, HEADS, DIM // HEADS).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        n = k.shape[2]
        mask = torch.ones(t, n, dtype=torch.bool).tril(diagonal=n - t)
        att = (q @ k.transpose(-1, -2)) / (DIM // HEADS) ** 0.5
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, DIM)
        x = x + self.out(y)
        return x + self.mlp(self.ln2(x)), (k, v)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1234)
        self.emb = torch.nn.Embedding(VOCAB, DIM)
        self.pos = torch.nn.Embedding(256, DIM)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(LAYERS))
        self.head = torch.nn.Linear(DIM, VOCAB)

    @torch.no_grad()
    def forward(self, tokens, start, cache):
        x = self.emb(tokens) + self.pos(torch.arange(start, start + tokens.shape[1]))[None]
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cache[i] if cache else None)
            new_cache.append(kv)
        return self.head(x)[:, -1], new_cache


def generate(model, logits, cache, start):
    """Greedy decoding of STEPS tokens from a cache; returns the stacked logits."""
    out = []
    for step in range(STEPS):
        token = logits.argmax(-1, keepdim=True)
        logits, cache = model(token, start + step, cache)
        out.append(logits)
    return torch.cat(out)


def main():
    torch.set_num_threads(1)  # same reduction order in both processes: bitwise-equal logits
    mode, sock = sys.argv[1], sys.argv[2]
    model = Model().eval()
    c = tensord.Client(sock, name=f"tiny-{mode}")
    if mode == "prefill":
        logits, cache = model(torch.tensor([PROMPT]), 0, None)
        for i, (k, v) in enumerate(cache):
            c.put(f"kv.{i}.k", k, durability="cache", pool="")
            c.put(f"kv.{i}.v", v, durability="cache")
        c.put("prefill.logits", logits)
        c.put("a.logits", generate(model, logits, cache, len(PROMPT)))
    else:
        views = c.get_many([f"kv.{i}.{kv}" for i in range(LAYERS) for kv in "kv"])
        tensors = [torch.from_dlpack(v) for v in views]
        assert all(t.data_ptr() == v.data_ptr for t, v in zip(tensors, views)), "copied"
        cache = [(tensors[2 * i], tensors[2 * i + 1]) for i in range(LAYERS)]
        logits = torch.from_dlpack(c.get("prefill.logits"))
        c.put("b.logits", generate(model, logits, cache, len(PROMPT)))
    print("OK", mode)


if __name__ == "__main__":
    main()
