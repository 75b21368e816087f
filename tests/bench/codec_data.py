#!/usr/bin/python3
"""Tensors for tests/bench/codec_bench, produced by running the Qwen3-VL-shaped model
(tensord.qwen3vl, Qwen3-VL-2B's layer shapes with deterministic random weights, two decoder
layers and two vision blocks so that it runs on a small CPU):

  kv.key.fp16 / kv.value.fp16    one layer's KV cache of a 512-token prompt with an image,
                                 (tokens, kv_heads, head_dim) in float16, as a KV block pool holds it
  kv.key.bf16                    the same keys in the model's bfloat16
  vision.features.bf16           the vision tower's merged features of one 448x448 image
  weights.q_proj.bf16 / .fp16    a decoder layer's attention projection
  weights.mlp_up.bf16            its SwiGLU up projection
  activation.relu.fp32           a ReLU'd hidden state (about half zeros): the sparse case

Usage: PYTHONPATH=build/python codec_data.py OUT_DIR   (writes NAME.bin files and manifest.json: name, dtype, shape)
"""
import json
import os
import sys

import torch

from tensord import qwen3vl  # PYTHONPATH=build/python


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    base = qwen3vl.PRESETS["qwen3-vl-2b"]
    import dataclasses
    config = base.replace(text=dataclasses.replace(base.text, num_hidden_layers=2),
                          vision=dataclasses.replace(base.vision, depth=2))
    torch.manual_seed(0)
    model = qwen3vl.Qwen3VL(config, seed=0)
    image = torch.rand(1, 3, 448, 448)
    n_image = model.image_token_count(image)
    ids = torch.randint(0, 150000, (512,))
    ids[16:16 + n_image] = config.image_token_id
    torch.set_grad_enabled(False)
    with torch.no_grad():
        features = model.encode_images([image[0]])
        out_ = model(ids, image_features=features, logits_to_keep=1)
    k, v = out_.past[1]  # layer 1: shaped by a real attention over the prompt
    # (kv_heads, tokens, head_dim) -> (tokens, kv_heads, head_dim), a block pool's layout
    key = k.reshape(-1, k.shape[-2], k.shape[-1]).transpose(0, 1).contiguous()
    value = v.reshape(-1, v.shape[-2], v.shape[-1]).transpose(0, 1).contiguous()
    layer = model.model.language_model.layers[0]
    hidden = model.model.language_model.embed_tokens(ids[:256]).float()
    tensors = {
        "kv.key.fp16": key.to(torch.float16),
        "kv.value.fp16": value.to(torch.float16),
        "kv.key.bf16": key.to(torch.bfloat16),
        "vision.features.bf16": features[0].to(torch.bfloat16),
        "weights.q_proj.bf16": layer.self_attn.q_proj.weight.detach().to(torch.bfloat16),
        "weights.q_proj.fp16": layer.self_attn.q_proj.weight.detach().to(torch.float16),
        "weights.mlp_up.bf16": layer.mlp.up_proj.weight.detach().to(torch.bfloat16),
        "activation.relu.fp32": torch.relu(torch.nn.functional.linear(
            hidden, layer.mlp.up_proj.weight.float())).contiguous(),
    }
    names = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
    manifest = []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.float32
                    else t.numpy().tobytes())
        manifest.append({"name": name, "dtype": names[t.dtype], "shape": list(t.shape),
                         "file": name + ".bin"})
        print(f"{name}: {names[t.dtype]} {list(t.shape)}")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tensord_codec_data")
