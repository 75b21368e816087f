"""The GPU tier from Python: without a GPU the daemon says so and GPU requests fail with a clear
FAILED_PRECONDITION; with a GPU and a CUDA build of PyTorch, a tensor created on the GPU by one
client is read as a CUDA tensor by another through torch.from_dlpack (zero-copy, CUDA IPC)."""

import pytest

import tensord

try:
    import torch
except ImportError:  # pragma: no cover - Debian's python3-torch is installed by install-deps
    torch = None

FAILED_PRECONDITION = 9


def _gpu_present(client):
    return next(t for t in client.stats()["tiers"] if t["tier"] == "gpu")["present"]


def test_gpu_requests_fail_clearly_without_the_tier(daemon):
    with tensord.Client(daemon) as c:
        if _gpu_present(c):
            pytest.skip("this machine has a GPU: the tier is present")
        assert c.stats()["gpus"] == []
        c.put("h", [1, 2, 3])
        assert c.stat("h")["tier"] == "host" and not c.stat("h")["on_gpu"]
        with pytest.raises(tensord.Error) as e:
            c.get("h", device="cuda")
        assert e.value.code == FAILED_PRECONDITION
        assert "GPU tier is not present" in str(e.value)
        with pytest.raises(tensord.Error) as e:
            c.create("g", [16], "float32", device="cuda:0")
        assert e.value.code == FAILED_PRECONDITION
        with pytest.raises(ValueError):
            c.get("h", device="cuda:x")
        t = c.get("h")  # host work is unaffected
        assert t.device == "cpu"
        assert not hasattr(t, "__cuda_array_interface__")
        del t  # ends the lease, so the daemon stops without waiting for it


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(),
                    reason="needs an NVIDIA GPU and a CUDA build of PyTorch "
                           "(Debian's python3-torch is CPU-only)")
def test_two_clients_share_a_cuda_tensor(daemon):
    with tensord.Client(daemon, name="writer") as w, tensord.Client(daemon, name="reader") as r:
        if not _gpu_present(w):
            pytest.skip("the daemon has no GPU tier")
        t = w.create("kv", [4, 1024], "float16", device="cuda:0")
        dst = torch.from_dlpack(t)
        assert dst.is_cuda
        src = torch.randn(4, 1024, dtype=torch.float16, device="cuda:0")
        dst.copy_(src)
        t.seal(stream=torch.cuda.current_stream().cuda_stream)
        got = torch.from_dlpack(r.get("kv", device="cuda:0"))
        assert got.is_cuda and torch.equal(got, src)
        host = torch.from_dlpack(r.get("kv"))  # copied down to shared memory
        assert torch.equal(host, src.cpu())
