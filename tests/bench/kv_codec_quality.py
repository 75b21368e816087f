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
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

import tensord
from tensord.qwen3vl import PRESETS, Qwen3VL
from tensord.torch import create_optimized_model

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


def measure(binary, work, preset="tiny", dtype="bfloat16", prompts=8, prefix_blocks=2,
            block_size=64, suffix=64, positions=32, seed=0, variants=VARIANTS):
    """Returns one dict per variant: top-1 agreement, logits' relative RMSE (mean, max), the
    codec the daemon chose for the blocks and their measured KV error, blocks reused."""
    config = dataclasses.replace(PRESETS[preset], dtype=dtype)
    model = Qwen3VL(config, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    vocab = config.text.vocab_size - 2  # below the image token
    prefix_len = prefix_blocks * block_size
    reqs = [torch.randint(0, vocab, (prefix_len + suffix,), generator=gen) for _ in range(prompts)]
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
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.layers:
        text = dataclasses.replace(PRESETS[args.preset].text, num_hidden_layers=args.layers)
        PRESETS[args.preset] = dataclasses.replace(PRESETS[args.preset], text=text)
    block = args.block_size or PRESETS[args.preset].prefill_chunk
    rows = measure(args.tensord, args.dir, args.preset, args.dtype, args.prompts,
                   args.prefix_blocks, block, max(args.positions, block), args.positions)
    print(f"preset {args.preset} ({args.dtype} KV), {args.prompts} prompts of "
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
