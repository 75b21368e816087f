"""Two PyTorch processes share KV-cache blocks through tensord: A prefills a prompt and stores
its per-layer K/V; B loads them zero-copy and continues generation; B's logits equal A's."""

import os

import torch

import tensord
from conftest import run_python

HERE = os.path.dirname(os.path.abspath(__file__))


def test_process_b_continues_from_process_a_kv_cache(daemon):
    script = os.path.join(HERE, "tiny_transformer.py")
    code = f"import runpy, sys; sys.argv = [{script!r}] + sys.argv[1:]; " \
           f"runpy.run_path({script!r}, run_name='__main__')"
    a = run_python(code, "prefill", daemon)
    assert a.returncode == 0, a.stderr
    b = run_python(code, "continue", daemon)
    assert b.returncode == 0, b.stderr
    with tensord.Client(daemon) as c:
        a_logits = torch.from_dlpack(c.get("a.logits"))
        b_logits = torch.from_dlpack(c.get("b.logits"))
        assert a_logits.shape == (8, 211)
        assert torch.equal(a_logits, b_logits), (a_logits - b_logits).abs().max()
        # The blocks really are the prefill's: 3 layers x (K, V) of (1, 4, 48, 32) fp32.
        blocks = c.ls("kv.")
        assert len(blocks) == 6 and all(b["shape"] == (1, 4, 48, 32) for b in blocks)
        assert c.stats()["counters"]["get_hits"] >= 7
