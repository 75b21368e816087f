"""The SSD tier from Python: more tensors than the host tier holds, every one read back intact."""

import pytest
import torch

import tensord


def test_tensors_beyond_the_host_tier_swap_and_come_back(swap_daemon):
    with tensord.Client(swap_daemon) as c:
        # 24 x 16 MiB = 384 MiB of DURABLE tensors through a 256 MiB host tier: later puts wait
        # for the migrator to demote earlier ones to the swap file.
        gen = torch.Generator().manual_seed(3)
        made = {}
        for i in range(24):
            x = torch.randn(4096, 1024, generator=gen)  # float32, 16 MiB
            c.put(f"layer.{i}", x)
            made[f"layer.{i}"] = x
        for key, x in made.items():
            t = c.get(key)
            assert torch.equal(torch.from_dlpack(t), x), key
            del t
        s = c.stats()
        assert s["objects"] == 24
        assert s["swap"] is not None and s["swap"]["engine"].startswith("io_uring")
        assert s["swap"]["bytes_written"] >= 128 << 20
        assert s["swap"]["checksum_failures"] == 0 and s["swap"]["io_errors"] == 0
        assert s["counters"]["promotions"] > 0 and s["counters"]["data_loss"] == 0
        host = next(t for t in s["tiers"] if t["tier"] == "host")
        assert host["used_bytes"] <= host["capacity_bytes"]
        assert 0 < s["pressure"]["high_watermark"] <= 1


def test_without_swap_stats_say_so(daemon):
    with tensord.Client(daemon) as c:
        s = c.stats()
        assert s["swap"] is None
        assert not next(t for t in s["tiers"] if t["tier"] == "ssd")["present"]


def test_prefetch_and_lossless_swap_copies(swap_daemon):
    with tensord.Client(swap_daemon) as c:
        # Activations after a ReLU: half zeros; stored losslessly, the swap copy is smaller.
        x = torch.relu(torch.randn(1024, 1024, generator=torch.Generator().manual_seed(5)))
        c.put("act", x, compression="lossless")
        c.put("raw", x)
        assert c.stat("act")["compression"] == "lossless"
        assert c.stat("raw")["compression"] == "none"
        with pytest.raises(ValueError):
            c.put("bad", x, compression="lossy-please")
        # Fill the host tier so that the migrator demotes both (256 MiB tier, 320 MiB of puts).
        for i in range(20):
            c.put(f"fill.{i}", torch.zeros(4096, 1024))
        act, raw = c.stat("act"), c.stat("raw")
        assert act["ssd_stored_bytes"] > 0 and raw["ssd_stored_bytes"] == raw["nbytes"]
        assert act["ssd_stored_bytes"] < act["nbytes"] * 0.8, act
        results = c.prefetch(["act", "nope"])
        assert results[0]["ok"] and results[0]["key"] == "act"
        assert not results[1]["ok"] and results[1]["code"] == "NOT_FOUND"
        assert c.stat("act")["leases"] == 0, "a prefetch holds no lease"
        assert torch.equal(torch.from_dlpack(c.get("act")), x)
        with pytest.raises(ValueError):
            c.prefetch(["act"], device="tpu")


def test_hinted_swapped_tensors_are_on_host_before_their_get(swap_daemon):
    import time
    with tensord.Client(swap_daemon) as c:
        gen = torch.Generator().manual_seed(9)
        made = {}
        for i in range(4):
            made[f"blk.{i}"] = torch.randn(4096, 1024, generator=gen)  # 16 MiB each
            c.put(f"blk.{i}", made[f"blk.{i}"])
        # 320 MiB more through the 256 MiB host tier: the migrator demotes the blocks to SSD.
        for i in range(20):
            c.put(f"fill.{i}", torch.zeros(4096, 1024))
        assert all(c.stat(k)["tier"] == "ssd" for k in made), "all four live on SSD only"
        r = c.hint(list(made) + ["nope", "blk.0"])
        assert r == {"accepted": 4, "refreshed": 1, "unknown": 1, "dropped": 0, "remote": 0}, r
        deadline = time.monotonic() + 20
        while not all(c.stat(k)["tier"] == "host" for k in made):
            assert time.monotonic() < deadline, "hinted tensors never came up from SSD"
            time.sleep(0.02)
        before = c.stats()
        for key, x in made.items():
            t = c.get(key)
            assert torch.equal(torch.from_dlpack(t), x), key
            del t
        after = c.stats()
        assert after["counters"]["get_hits"] - before["counters"]["get_hits"] == 4, "host hits"
        assert after["swap"]["bytes_read"] == before["swap"]["bytes_read"], "no SSD read at get"
        assert after["counters"]["lookahead_used"] == 4
        assert after["counters"]["lookahead_issued"] == 4
        with pytest.raises(ValueError):
            c.hint(["blk.0"], ttl=7200)


def test_a_hint_storm_leaves_every_durable_tensor_intact(swap_daemon):
    with tensord.Client(swap_daemon) as c:
        gen = torch.Generator().manual_seed(11)
        made = {}
        for i in range(20):  # 320 MiB through a 256 MiB host tier: some live on SSD only
            made[f"w.{i}"] = torch.randn(4096, 1024, generator=gen)
            c.put(f"w.{i}", made[f"w.{i}"])
        assert any(c.stat(k)["tier"] == "ssd" for k in made)
        # 10^6 keys in calls of the maximum size: known ones, duplicates, unknown ones.
        sent = accepted = 0
        while sent < 1_000_000:
            keys = [f"w.{(sent + i) // 4 % 20}" if (sent + i) % 4 == 0 else f"ghost.{sent + i}"
                    for i in range(65536)]
            r = c.hint(keys)
            accepted += r["accepted"]
            sent += len(keys)
        assert accepted == 20, "each known key queued once"
        with pytest.raises(tensord.Error) as too_many:
            c.hint(["w.0"] * 65537)
        assert too_many.value.code_name == "INVALID_ARGUMENT"
        for key, x in made.items():
            t = c.get(key)
            assert torch.equal(torch.from_dlpack(t), x), key
            del t
        s = c.stats()["counters"]
        assert s["lookahead_unknown"] >= 700_000 and s["data_loss"] == 0


def test_lossy_swap_copies_come_back_within_their_budget(swap_daemon):
    with tensord.Client(swap_daemon) as c:
        # 40 x 8 MiB float16 KV-like blocks through a 256 MiB host tier, lossy within 1%: their
        # swap copies take about half the bytes, and every value read back is within budget.
        gen = torch.Generator().manual_seed(5)
        made = {}
        for i in range(40):
            x = (torch.randn(1024, 32, 128, generator=gen) *
                 torch.linspace(0.5, 4, 128)).to(torch.float16)
            c.put(f"kv.{i}", x, compression="lossy", error_budget=0.01)
            made[f"kv.{i}"] = x
        swapped = [k for k in made if c.stat(k)["ssd_codec"] not in ("", "none")]
        assert swapped, "the host tier is too small for all of them"
        for key in swapped:
            info = c.stat(key)
            assert info["compression"] == "lossy" and info["error_budget"] == 0.01
            assert info["ssd_codec"] in ("int8", "fp8_e4m3"), info
            assert 0 < info["ssd_rel_rmse"] <= 0.01
            assert info["ssd_stored_bytes"] < 0.6 * info["nbytes"]
        for key, x in made.items():
            t = c.get(key)
            y = torch.from_dlpack(t).float()
            err = ((y - x.float()).norm() / x.float().norm()).item()
            assert err <= 0.01, (key, err)
            del t, y
        s = c.stats()
        codecs = {k["codec"]: k for k in s["codecs"]}
        assert sum(codecs[n]["encodes"] for n in ("int8", "fp8_e4m3") if n in codecs) >= len(swapped)
        assert all(k["decode_failures"] == 0 for k in s["codecs"])
        assert s["counters"]["data_loss"] == 0
        with pytest.raises(tensord.Error) as e:  # a lossy policy needs a budget
            c.put("nobudget", torch.zeros(4096), compression="lossy")
        assert e.value.code_name == "INVALID_ARGUMENT"
        with pytest.raises(ValueError):
            c.put("typo", torch.zeros(4096), compression="lossy!")


def test_compressed_ram_front_keeps_cold_tensors_encoded_in_memory(tmp_path):
    """With ssd.compressed_ram, well-compressed swap copies of CACHE tensors stay in RAM: Gets
    read no SSD bytes. (A DURABLE tensor's swap copy always goes to the file: it must survive a
    restart of the daemon.)"""
    from conftest import _serve
    swap = tmp_path / "swap"
    served = _serve(tmp_path / "run", "--swap-file", str(swap), "--swap-size", "1GiB",
                    "--set", "ssd.compressed_ram=96MiB")
    sock = next(served)
    try:
        with tensord.Client(sock) as c:
            gen = torch.Generator().manual_seed(11)
            made = {}
            for i in range(8):  # 8 x 8 MiB float16 KV blocks, lossy within 1%: ~4 MiB encoded
                x = (torch.randn(1024, 32, 128, generator=gen) *
                     torch.linspace(0.5, 4, 128)).to(torch.float16)
                c.put(f"kv.{i}", x, compression="lossy", error_budget=0.01, durability="cache")
                made[f"kv.{i}"] = x
            for i in range(20):  # 320 MiB of incompressible fill through the 256 MiB host tier
                c.put(f"fill.{i}", torch.randn(4096, 1024, generator=gen))
            demoted = [k for k in made if c.stat(k)["tier"] == "ssd"]
            assert demoted, "the host tier is too small for everything"
            w = c.stats()["swap"]
            assert w["ram_capacity_bytes"] == 96 << 20
            assert w["ram_entries"] >= len(demoted) and w["ram_used_bytes"] <= 96 << 20
            assert w["ram_logical_bytes"] >= 1.8 * w["ram_used_bytes"], w
            read_before = w["bytes_read"]
            for key in demoted:
                y = torch.from_dlpack(c.get(key)).float()
                x = made[key].float()
                assert ((y - x).norm() / x.norm()).item() <= 0.01, key
                del y
            w = c.stats()["swap"]
            assert w["ram_reads"] >= len(demoted)
            assert w["bytes_read"] == read_before, "served from compressed RAM, not the disk"
            assert c.stats()["counters"]["data_loss"] == 0
    finally:
        next(served, None)
        swap.unlink(missing_ok=True)
