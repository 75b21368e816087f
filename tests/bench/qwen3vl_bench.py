"""qwen3vl_bench: N model server processes serve one multi-turn multimodal request stream, with
private copies and through tensord, and print the source documents' results table, measured.

Stream (seeded): a shared system prompt; conversations of several turns, each turn extending
the previous one (its prompt, the model's answer, a new user message); a pool of images, some
recurring (Zipf-like), attached to some turns. At most one request per server is in flight (a
closed loop); a conversation's next turn is dispatched when its previous one has finished.

Run 1 "private": each server builds its own weights, no feature or KV reuse.
Run 2 "tensord": a daemon started here; server 0 shares its weights, the others build the
model on the meta device and attach; vision features and prefix KV blocks are reused.

Usage (from the build tree):
    PYTHONPATH=build/python TENSORD_BIN=build/daemon/tensord \
        /usr/bin/python3 tests/bench/qwen3vl_bench.py [--preset tiny] [--servers 4] [--out DIR]
"""

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import tensord
from tensord.qwen3vl import PRESETS, Qwen3VL

PAGE = os.sysconf("SC_PAGE_SIZE")


# --- the request stream -----------------------------------------------------------------------

def make_stream(a, config):
    """Returns conversations: each a list of turns (user tokens, image index or None)."""
    rng = random.Random(a.seed)
    vocab = config.text.vocab_size

    def token():
        t = rng.randrange(vocab - 1)  # never the image placeholder
        return t + 1 if t >= config.image_token_id else t

    system = [token() for _ in range(a.system_tokens)]
    convs = []
    for _ in range(a.conversations):
        turns = []
        for t in range(rng.randint(max(1, a.turns - 1), a.turns + 1)):
            user = [token() for _ in range(rng.randint(a.user_tokens // 2,
                                                       a.user_tokens * 3 // 2))]
            img = None
            if rng.random() < a.image_share:
                # Zipf-like: low indices recur.
                img = min(int(rng.paretovariate(1.2)) - 1, a.images - 1)
            turns.append((user, img))
        convs.append(turns)
    return system, convs


def image(a, idx):
    g = torch.Generator().manual_seed(1000 + idx)
    return torch.randn(3, a.image_size, a.image_size, generator=g)


# --- a server process -------------------------------------------------------------------------

def serve(rank, a, mode, sock, tasks, results):
    torch.set_num_threads(1)
    config = preset(a)
    if mode == "private":
        model = Qwen3VL(config, seed=a.seed)
    else:
        from tensord.torch import create_optimized_model
        base = Qwen3VL(config, seed=a.seed) if rank == 0 else Qwen3VL(config, device="meta")
        model = create_optimized_model(base, {"memory_size": a.host_capacity}, socket=sock,
                                       prefix="bench.", block_size=a.block_size)
    base = getattr(model, "base_model", model)
    pad = config.image_token_id
    results.put(("ready", rank, os.getpid()))
    while True:
        task = tasks.get()
        if task is None:
            return
        rid, ids, imgs = task
        pics = [image(a, i) for i in imgs]
        full, nth = [], 0
        for tok in ids:  # placeholders: one run per image, sized by the image
            if tok == -1:
                full.extend([pad] * base.image_token_count(pics[nth]))
                nth += 1
            else:
                full.append(tok)
        t0 = time.perf_counter()
        first = []
        out = model.generate(torch.tensor(full), pics or None, a.new_tokens,
                             on_token=lambda _: first or first.append(time.perf_counter()))
        t1 = time.perf_counter()
        kv = (model.kv.hit_blocks, model.kv.lookup_blocks, model.features.hits,
              model.features.misses) if mode == "tensord" else None
        keys = model.request_keys(torch.tensor(full), pics or None) if mode == "tensord" else []
        results.put(("done", rank, rid, out, first[0] - t0, t1 - t0, kv, keys, len(full)))


def preset(a):
    c = PRESETS[a.preset]
    if a.layers:
        c = c.replace(text=c.text.__class__(**{**c.text.__dict__, "num_hidden_layers": a.layers}),
                      vision=c.vision.__class__(**{**c.vision.__dict__,
                                                   "depth": min(a.layers, c.vision.depth)}))
    return c.replace(dtype=a.dtype) if a.dtype else c


# --- measurement helpers ----------------------------------------------------------------------

def sample(t_start, procs, daemon, serving):
    """(seconds into the run, servers' total PSS KiB, daemon PSS KiB, serving yet)."""
    return (time.perf_counter() - t_start, sum(pss_kib(p.pid) for p in procs),
            pss_kib(daemon.pid) if daemon else 0, serving)


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def shm_pss_kib(pid):
    """PSS of the process's tensord segment mappings (its share of the shared weights)."""
    total, inside = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if "-" in line.split()[0] and len(line.split()) >= 5:
                    inside = "/dev/shm/tensord." in line
                elif inside and line.startswith("Pss:"):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


class Cgroup:
    """A memory-limited cgroup (v2 if its memory controller is on, else v1) for the servers."""

    def __init__(self, limit):
        self.path, self.v2 = None, False
        if not limit:
            return
        name = f"tensord-bench-{os.getpid()}"
        # Beneath this process's own cgroup (v2 "0::/path", or v1's memory hierarchy).
        own = dict((l.split(":", 2)[1], l.split(":", 2)[2].strip())
                   for l in open("/proc/self/cgroup"))
        v2_parent = "/sys/fs/cgroup" + own.get("", "/").rstrip("/")
        v1_parent = "/sys/fs/cgroup/memory" + own.get("memory", "/").rstrip("/")
        try:
            if "memory" in open(f"{v2_parent}/cgroup.controllers").read().split():
                with open(f"{v2_parent}/cgroup.subtree_control", "w") as f:
                    f.write("+memory")
                self.path, self.v2 = f"{v2_parent}/{name}", True
                os.mkdir(self.path)
                open(f"{self.path}/memory.max", "w").write(str(limit))
                if os.path.exists(f"{self.path}/memory.swap.max"):
                    open(f"{self.path}/memory.swap.max", "w").write("0")
            else:
                self.path = f"{v1_parent}/{name}"
                os.mkdir(self.path)
                open(f"{self.path}/memory.limit_in_bytes", "w").write(str(limit))
                if os.path.exists(f"{self.path}/memory.memsw.limit_in_bytes"):
                    open(f"{self.path}/memory.memsw.limit_in_bytes", "w").write(str(limit))
        except OSError as e:
            sys.exit(f"qwen3vl_bench: --memory-max needs a writable cgroup with the memory "
                     f"controller (v2 under {v2_parent} or v1 under {v1_parent}): {e}")

    def add(self, pid):
        if self.path:
            open(f"{self.path}/cgroup.procs", "w").write(str(pid))

    def oom_kills(self):
        if not self.path:
            return 0
        if self.v2:
            ev = dict(l.split() for l in open(f"{self.path}/memory.events"))
            return int(ev.get("oom_kill", 0))
        ctl = dict(l.split() for l in open(f"{self.path}/memory.oom_control"))
        return int(ctl.get("oom_kill", 0))

    def close(self):
        if self.path:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


# --- one run ----------------------------------------------------------------------------------

def start_daemon(a, run_dir):
    sock = os.path.join(run_dir, "tensord.sock")
    args = [os.environ.get("TENSORD_BIN", "build/daemon/tensord"), "--set", "daemon.persist=false", "--run-dir", run_dir,
            "--host-capacity", str(a.host_capacity), "--log-level", "warn"]
    if not a.prefault:  # the segment's untouched pages then cost nothing: PSS shows what is used
        args.append("--no-prefault")
    if a.swap_file:
        args += ["--swap-file", a.swap_file, "--swap-size", a.swap_size]
    proc = subprocess.Popen(args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            tensord.Client(sock, timeout=0.5).close()
            return proc, sock
        except tensord.Error:
            time.sleep(0.05)
    proc.kill()
    sys.exit("qwen3vl_bench: tensord did not start")


def run(a, mode, system, convs):
    ctx = mp.get_context("spawn")  # gRPC does not survive fork
    tasks, results = ctx.Queue(), ctx.Queue()
    daemon, sock, run_dir = None, None, None
    if mode == "tensord":
        run_dir = tempfile.mkdtemp(prefix="qwen3vl-bench-")
        daemon, sock = start_daemon(a, run_dir)
    cg = Cgroup(a.memory_max)
    procs, samples, t_start = [], [], time.perf_counter()
    for r in range(a.servers):
        p = ctx.Process(target=serve, args=(r, a, mode, sock, tasks, results), daemon=True)
        p.start()
        cg.add(p.pid)
        procs.append(p)
        if r == 0 and mode == "tensord":  # the sharer first, so that the others attach
            while True:
                try:
                    if results.get(timeout=0.25)[0] == "ready":
                        break
                except queue.Empty:
                    samples.append(sample(t_start, procs, daemon, False))
                    if not p.is_alive():
                        sys.exit(f"qwen3vl_bench: server 0 died (exit {p.exitcode}) sharing")
    ready = 1 if mode == "tensord" else 0
    t_first = None  # first dispatch: throughput counts serving time, not start-up
    stats = {"req": [], "kv": {}, "keys": [], "outs": {}}
    # Conversation state: next turn index and the prompt so far.
    state = {c: (0, list(system)) for c in range(len(convs))}
    pending = list(range(len(convs)))
    random.Random(a.seed + 1).shuffle(pending)
    inflight, done_reqs, failed = 0, 0, None
    total_reqs = sum(len(t) for t in convs)

    def dispatch():
        nonlocal inflight
        while inflight < a.servers and pending:
            c = pending.pop(0)
            turn, prompt = state[c]
            user, img = convs[c][turn]
            ids = prompt + ([-1] if img is not None else []) + user
            imgs = [i for i in ([x for x in prompt_images[c]] + ([img] if img is not None else []))]
            tasks.put(((c, turn), ids, imgs))
            state[c] = (turn, ids)
            prompt_images[c] = imgs
            inflight += 1

    prompt_images = {c: [] for c in range(len(convs))}
    last_sample = 0.0
    while done_reqs < total_reqs:
        if ready >= a.servers:
            t_first = t_first or time.perf_counter()
            dispatch()
        try:
            msg = results.get(timeout=0.2)
        except queue.Empty:
            msg = None
        now = time.perf_counter()
        if now - last_sample > 0.25:
            last_sample = now
            samples.append(sample(t_start, procs, daemon, ready >= a.servers))
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            failed = f"{len(dead)} server(s) died (exit {[p.exitcode for p in dead]})"
            break
        if msg is None:
            continue
        if msg[0] == "ready":
            ready += 1
            continue
        _, rank, rid, out, ttft, total, kv, keys, ntok = msg
        inflight -= 1
        done_reqs += 1
        c, turn = rid
        stats["req"].append((now - t_start, ttft, total, ntok))
        stats["outs"][rid] = out
        stats["keys"].append((keys, ntok))
        if kv:
            stats["kv"][rank] = kv
        _, ids = state[c]
        if turn + 1 < len(convs[c]):
            pad = preset(a).image_token_id  # an answer token equal to it is not an image
            state[c] = (turn + 1, ids + [t if t != pad else 0 for t in out])
            pending.append(c)
    wall = time.perf_counter() - (t_first or t_start)
    final = {"wall": wall, "failed": failed, "samples": samples, "oom_kills": cg.oom_kills()}
    final["cpu"] = sum(cpu_seconds(p.pid) for p in procs) + (cpu_seconds(daemon.pid) if daemon else 0)
    final["shm_pss_kib"] = [shm_pss_kib(p.pid) for p in procs]
    if sock:
        with tensord.Client(sock) as c:
            s = c.stats()
        final["frag"] = max((p["fragmentation"] for p in s["pools"] if p["used_bytes"]),
                            default=0.0)
        final["daemon_counters"] = s["counters"]
    for _ in procs:
        tasks.put(None)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    cg.close()
    if daemon:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(run_dir, ignore_errors=True)
    stats.update(final)
    return stats


def infinite_cache_hits(key_lists, block):
    """Hits an unbounded cache storing the same blocks would give with the requests served
    one after another in the order they completed (concurrent requests that compute the same
    blocks at once count as misses against it). At least one token is always computed."""
    seen, hits = set(), 0
    for keys, ntok in key_lists:
        n = 0
        while n < len(keys) and keys[n] in seen and (n + 1) * block < ntok:
            n += 1
        hits += n
        seen.update(keys)
    return hits


def perf_counters_work():
    try:
        r = subprocess.run(["perf", "stat", "-x,", "-e", "cache-misses", "true"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    ok = r.returncode == 0 and "not supported" not in r.stderr and "<not" not in r.stderr
    return ok, (r.stderr.strip().splitlines() or ["?"])[-1]


# --- report -----------------------------------------------------------------------------------

def report(a, before, after, weights_bytes):
    def lat(s, i):
        xs = [r[i] for r in s["req"]]
        return statistics.mean(xs) if xs else float("nan"), pct(xs, 95)

    rows = []

    def row(name, b, f, unit="", fmt="{:.3f}", lower_better=True):
        ratio = (f / b) if b else float("nan")
        rows.append((name, fmt.format(b) + unit, fmt.format(f) + unit, f"{ratio:.2f}x"))

    for i, n in ((1, "time to first token"), (2, "request latency")):
        bm, bp = lat(before, i)
        am, ap = lat(after, i)
        row(f"{n}, mean", bm, am, " s")
        row(f"{n}, p95", bp, ap, " s")
    def peak(s, daemon, serving=True):
        return max((x[1] + (x[2] if daemon else 0) for x in s["samples"] if x[3] or not serving),
                   default=0) / 2**20
    row("peak total PSS while serving, servers + daemon", peak(before, True), peak(after, True),
        " GiB")
    row("peak total PSS while serving, servers only", peak(before, False), peak(after, False),
        " GiB")
    row("peak total PSS incl. start-up, servers + daemon", peak(before, True, False),
        peak(after, True, False), " GiB")
    row("weights resident per process", weights_bytes / 2**20,
        statistics.mean(after["shm_pss_kib"]) / 1024, " MiB", "{:.1f}")
    n_b, n_a = max(1, len(before["req"])), max(1, len(after["req"]))
    row("throughput", n_b / before["wall"], n_a / after["wall"], " req/s", "{:.2f}")
    row("CPU-seconds per request (all processes)", before["cpu"] / n_b, after["cpu"] / n_a, " s")
    kv = after["kv"].values()
    hits, looked = sum(k[0] for k in kv), sum(k[1] for k in kv)
    fh, fm = sum(k[2] for k in kv), sum(k[3] for k in kv)
    ideal = infinite_cache_hits(after["keys"], a.block_size)
    print(f"\n## qwen3vl_bench: preset {a.preset}, {a.servers} servers, "
          f"{len(after['req'])} requests, block {a.block_size} tokens\n")
    print("| measurement | private copies | tensord | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print(f"| KV-block hit rate (of blocks looked up) | 0 (no reuse) | {hits / max(1, looked):.3f} | |")
    print(f"| KV hits ÷ infinite-cache hits | | {hits} / {ideal} = {hits / max(1, ideal):.3f} | |")
    print(f"| vision-feature hit rate | 0 (no reuse) | {fh / max(1, fh + fm):.3f} | |")
    print(f"| daemon pool fragmentation (max over used pools) | n/a | {after.get('frag', 0):.3f} | |")
    same = [k for k in before["outs"] if k in after["outs"]]
    equal = sum(before["outs"][k] == after["outs"][k] for k in same)
    print(f"\noutputs identical: {equal} of {len(same)} requests")
    for name, s in (("private", before), ("tensord", after)):
        if s["failed"] or s["oom_kills"]:
            print(f"{name} run: {s['failed'] or ''} oom_kills={s['oom_kills']}, "
                  f"{len(s['req'])} of the stream's requests completed")
    ok, why = perf_counters_work()
    print("L2 cache efficiency: " + ("perf counters work here; not yet measured by this bench"
                                     if ok else f"not measurable here (perf stat: {why})"))
    print("energy: not measurable here (no RAPL on a VM); CPU-seconds per request stand in")
    return equal == len(same)


def plot(a, before, after):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib not installed (apt install python3-matplotlib)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in (("private copies", before), ("tensord", after)):
        ax1.plot([r[0] for r in s["req"]], [r[2] for r in s["req"]], ".", label=name)
        ax2.plot([x[0] for x in s["samples"]], [(x[1] + x[2]) / 2**20 for x in s["samples"]],
                 label=name)
    ax1.set(xlabel="time in run (s)", ylabel="request latency (s)", title="latency")
    ax2.set(xlabel="time in run (s)", ylabel="total PSS (GiB)", title="servers (+daemon) PSS")
    ax1.legend()
    ax2.legend()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"qwen3vl_bench_{a.preset}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--layers", type=int, default=0, help="override decoder layers (and ViT depth)")
    p.add_argument("--dtype", default="", help="parameter dtype override (float32, bfloat16)")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--system-tokens", type=int, default=512)
    p.add_argument("--user-tokens", type=int, default=96)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--images", type=int, default=6, help="image pool size")
    p.add_argument("--image-share", type=float, default=0.5, help="share of turns with an image")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host-capacity", type=int, default=0,
                   help="daemon host tier bytes (default: weights x 1.25 + 512 MiB)")
    p.add_argument("--prefault", action="store_true", help="let the daemon prefault its segment")
    p.add_argument("--swap-file", default="", help="gives the daemon an SSD tier")
    p.add_argument("--swap-size", default="8GiB")
    p.add_argument("--memory-max", type=int, default=0, help="servers' cgroup memory limit")
    p.add_argument("--only", choices=["private", "tensord"], default="")
    p.add_argument("--out", default="bench-out")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    config = preset(a)
    system, convs = make_stream(a, config)
    weights_bytes = sum(t.numel() * t.element_size()
                        for t in Qwen3VL(config, device="meta").parameters())
    if not a.host_capacity:
        a.host_capacity = int(weights_bytes * 1.25) + (512 << 20)
    print(f"qwen3vl_bench: {a.preset} ({weights_bytes / 2**20:.0f} MiB of weights), "
          f"{a.servers} servers, {sum(len(c) for c in convs)} requests"
          + (f", servers' memory.max {a.memory_max / 2**30:.1f} GiB" if a.memory_max else ""),
          flush=True)
    empty = {"req": [], "samples": [], "wall": 1, "cpu": 0, "outs": {}, "kv": {}, "keys": [],
             "shm_pss_kib": [0], "failed": "not run", "oom_kills": 0}
    before = run(a, "private", system, convs) if a.only != "tensord" else empty
    after = run(a, "tensord", system, convs) if a.only != "private" else empty
    same = report(a, before, after, weights_bytes)
    plot(a, before, after)
    with open(os.path.join(a.out, f"qwen3vl_bench_{a.preset}.json"), "w") as f:
        json.dump({"args": vars(a), "private": {k: v for k, v in before.items() if k != "outs"},
                   "tensord": {k: v for k, v in after.items() if k != "outs"}}, f, default=str)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
