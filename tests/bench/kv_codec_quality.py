"""kv_codec_quality: what lossy KV codecs do to the model's outputs, through the real daemon.

The Qwen3-VL-shaped model (tensord.qwen3vl) serves prompts through tensord.torch: the first pass
over each prompt's prefix stores its KV blocks, every block is then evicted to the SSD tier
(encoded there by the codec the variant allows), and the whole prompt runs again, reusing the
prefix blocks decoded from their swap copies. The logits of the last `--positions` tokens are
compared with the plain model's (no tensord, no reuse): top-1 next-token agreement and the
logits' relative RMSE. The variant "none" stores raw copies: its outputs must be bit-identical.

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/kv_codec_quality.py \
      --tensord build/daemon/tensord [--preset tiny] [--dtype bfloat16] [--prompts 8]
"""

import argparse
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import tensord
from tensord.qwen3vl import PRESETS, Qwen3VL, _rope_tables
from tensord.torch import create_optimized_model

CORPUS = "/usr/share/common-licenses"  # Debian's base-files: always there, plain English text

VARIANTS = [
    ("none", {}),
    ("int8, lossy 1%", {"compression": "lossy", "error_budget": 0.01, "codecs": ["int8"]}),
    ("fp8_e4m3, lossy 5%", {"compression": "lossy", "error_budget": 0.05,
                            "codecs": ["fp8_e4m3"]}),
    ("auto, lossy 1%", {"compression": "lossy", "error_budget": 0.01}),
    ("fp16 (float32 KV only), lossy 0.1%", {"compression": "lossy", "error_budget": 0.001,
                                            "codecs": ["fp16"]}),
]


def start_daemon(binary, work):
    run = tempfile.mkdtemp(prefix="run.", dir=work)
    swap = os.path.join(run, "swap")
    proc = subprocess.Popen([binary, "--set", "daemon.persist=false", "--run-dir", run, "--host-capacity", "512MiB",
                             "--swap-file", swap, "--swap-size", "1GiB", "--log-level", "warn",
                             "--no-prefault"])
    sock = os.path.join(run, "tensord.sock")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            tensord.Client(sock, timeout=0.5).close()
            break
        except tensord.Error:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("tensord did not start")

    def stop():
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(run, ignore_errors=True)
    return sock, stop


def text_corpus(path=CORPUS):
    """Returns the bytes of the text files under `path` as tokens (one byte, one token); links
    (GPL -> GPL-3 ...) are skipped so that no text is there twice."""
    data = b""
    for f in sorted(glob.glob(os.path.join(path, "*"))):
        if os.path.isfile(f) and not os.path.islink(f):
            with open(f, "rb") as fh:
                data += fh.read()
    return torch.tensor(list(data), dtype=torch.long)


def blas_is_fast(limit_s=0.05):
    """Whether torch's matmuls run on an optimized BLAS: the reference BLAS (Debian's default
    without libopenblas0-pthread) takes ~10x longer and makes training minutes into an hour."""
    a, b = torch.randn(192, 256), torch.randn(256, 4096)
    torch.matmul(a, b)
    start = time.monotonic()
    for _ in range(4):
        torch.matmul(a, b)
    return (time.monotonic() - start) / 4 < limit_s


def train_on_text(model, data, steps, seq=192, batch=4, lr=3e-3, seed=0, log=None):
    """Trains the model's decoder (float32) to predict the next byte of `data`, so that its
    next-token distributions are a trained model's, not the near-flat ones of random weights.
    Returns the last steps' mean loss (nats per byte)."""
    lm, c = model.model.language_model, model.config
    head = lm.embed_tokens.weight if c.text.tie_word_embeddings else model.lm_head.weight
    params = [p for p in lm.parameters()] + ([] if c.text.tie_word_embeddings
                                             else [model.lm_head.weight])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    rope = _rope_tables(0, seq, c.text, torch.float32)
    recent = []
    for step in range(steps):
        loss = 0.0
        for _ in range(batch):
            i = int(torch.randint(0, len(data) - seq - 1, (1,), generator=g))
            ids = data[i:i + seq + 1]
            x = F.embedding(ids[:-1], lm.embed_tokens.weight)
            for layer in lm.layers:
                x, _ = layer(x, 0, None, rope)
            loss = loss + F.cross_entropy(F.linear(lm.norm(x), head), ids[1:])
        opt.zero_grad()
        (loss / batch).backward()
        opt.step()
        sched.step()
        recent = (recent + [float(loss) / batch])[-20:]
        if log and step % 100 == 0:
            log(f"step {step}: loss {sum(recent) / len(recent):.3f} nats/byte")
    return sum(recent) / len(recent)


def measure(binary, work, preset="tiny", dtype="bfloat16", prompts=8, prefix_blocks=2,
            block_size=64, suffix=64, positions=32, seed=0, variants=VARIANTS, train_steps=0,
            log=None):
    """Returns one dict per variant: top-1 agreement, logits' relative RMSE (mean, max), the
    codec the daemon chose for the blocks and their measured KV error, blocks reused.
    train_steps > 0: the model is first trained on text (train_on_text) and the prompts are
    held-out text; 0: random weights and random prompts."""
    config = dataclasses.replace(PRESETS[preset], dtype=dtype)
    model = Qwen3VL(config, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    vocab = config.text.vocab_size - 2  # below the image token
    prefix_len = prefix_blocks * block_size
    if train_steps:
        data = text_corpus()
        held_out = len(data) * 9 // 10  # prompts come from the last tenth, never trained on
        trained = Qwen3VL(dataclasses.replace(config, dtype="float32"), seed=seed)
        train_on_text(trained, data[:held_out], train_steps, seq=prefix_len + suffix, seed=seed,
                      log=log)
        model.load_state_dict(trained.state_dict())  # names checked; cast to the model's dtype
        starts = torch.randint(held_out, len(data) - prefix_len - suffix, (prompts,), generator=gen)
        reqs = [data[int(s):int(s) + prefix_len + suffix] for s in starts]
    else:
        reqs = [torch.randint(0, vocab, (prefix_len + suffix,), generator=gen)
                for _ in range(prompts)]
    with torch.no_grad():
        refs = [model(ids, logits_to_keep=positions).logits for ids in reqs]
    rows = []
    for name, kv_compression in variants:
        if "fp16" in kv_compression.get("codecs", ()) and dtype != "float32":
            continue  # fp16 encodes float32 tensors only
        sock, stop = start_daemon(binary, work)
        try:
            client = tensord.Client(sock)
            opt = create_optimized_model(model, client=client, prefix=f"q.{len(rows)}.",
                                         block_size=block_size, kv_compression=kv_compression)
            agree = total = 0
            rmses, codecs, kv_err = [], set(), 0.0
            for ids, ref in zip(reqs, refs):
                opt(ids[:prefix_len])  # stores the prefix blocks (raw, on host)
                keys = opt.request_keys(ids[:prefix_len])
                for k in keys:
                    out = client.evict(k)
                    assert out.startswith("demoted"), (k, out)
                for k in keys:
                    info = client.stat(k)
                    assert info["tier"] == "ssd", info
                    codecs.add(info["ssd_codec"] or "none")
                    kv_err = max(kv_err, info["ssd_rel_rmse"])
                before = opt.kv.hit_blocks
                got = opt(ids, logits_to_keep=positions).logits
                assert opt.kv.hit_blocks - before == prefix_blocks, "the prefix was not reused"
                agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
                total += ref.shape[0]
                rmses.append(((got - ref).norm() / ref.norm()).item())
            client.close()
        finally:
            stop()
        rows.append({"variant": name, "top1_agreement": agree / total, "compared": total,
                     "logit_rel_rmse_mean": sum(rmses) / len(rmses),
                     "logit_rel_rmse_max": max(rmses), "codecs": sorted(codecs),
                     "kv_rel_rmse_max": kv_err})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensord", default=os.environ.get("TENSORD_BIN", "build/daemon/tensord"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--layers", type=int, default=0, help="cut the decoder to N layers")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prefix-blocks", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=0, help="default: the prefill chunk")
    ap.add_argument("--positions", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=0,
                    help="first train the model on text for N steps (0: random weights)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.layers:
        text = dataclasses.replace(PRESETS[args.preset].text, num_hidden_layers=args.layers)
        PRESETS[args.preset] = dataclasses.replace(PRESETS[args.preset], text=text)
    block = args.block_size or PRESETS[args.preset].prefill_chunk
    rows = measure(args.tensord, args.dir, args.preset, args.dtype, args.prompts,
                   args.prefix_blocks, block, max(args.positions, block), args.positions,
                   train_steps=args.train_steps, log=lambda m: print(m, file=sys.stderr))
    weights = (f"trained {args.train_steps} steps on {CORPUS}, held-out text prompts"
               if args.train_steps else "random weights, random prompts")
    print(f"preset {args.preset}, {weights} ({args.dtype} KV), {args.prompts} prompts of "
          f"{args.prefix_blocks} reused blocks of {block} tokens; next-token logits of the last "
          f"{args.positions} positions against the plain model\n")
    print("| KV swap copies | codec chosen | KV rel. RMSE (max) | top-1 agreement | "
          "logits rel. RMSE mean / max |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {', '.join(r['codecs'])} | {r['kv_rel_rmse_max']:.2e} | "
              f"{100 * r['top1_agreement']:.1f} % of {r['compared']} | "
              f"{r['logit_rel_rmse_mean']:.2e} / {r['logit_rel_rmse_max']:.2e} |")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
