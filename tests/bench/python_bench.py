"""python_bench: a 64 MiB tensor reaching a second Python process, four ways, in one run.

    tensord             c.get(key) + torch.from_dlpack (zero copy from shared memory)
    torch.multiprocessing  a share_memory_() tensor through a torch.multiprocessing Queue
    pickle              a numpy array through a multiprocessing Queue (copied through a pipe)
    torch.save/load     a file in /dev/shm (the source documents' approach)

For each: the consumer's time to obtain the tensor, and to obtain it and read every byte
(t.sum()), medians of REPS. Processes are spawned, not forked (gRPC does not survive fork).
Usage (from the build tree):
    PYTHONPATH=build/python TENSORD_BIN=build/daemon/tensord /usr/bin/python3 tests/bench/python_bench.py
"""

import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.multiprocessing as tmp

import tensord

REPS = 15
SHAPE = (4096, 4096)  # float32: 64 MiB


def timed(fn):
    t0 = time.perf_counter()
    t = fn()
    t1 = time.perf_counter()
    t.sum()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


def start_daemon():
    run_dir = tempfile.mkdtemp(prefix="tensord-pybench-")
    binary = os.environ.get("TENSORD_BIN", "build/daemon/tensord")
    proc = subprocess.Popen([binary, "--set", "daemon.persist=false", "--run-dir", run_dir, "--host-capacity", "1GiB",
                             "--log-level", "warn"])
    sock = os.path.join(run_dir, "tensord.sock")
    for _ in range(400):
        if os.path.exists(sock):
            break
        time.sleep(0.025)
    return proc, sock


def consume_tensord(sock, out):
    torch.set_num_threads(1)
    c = tensord.Client(sock)
    res = []
    for _ in range(REPS):
        res.append(timed(lambda: torch.from_dlpack(c.get("bench.x"))))
    out.put(res)


def produce_torch_mp(q, done):
    x = torch.randn(*SHAPE).share_memory_()
    for _ in range(REPS):
        q.put(x)
    done.wait()


def consume_torch_mp(q, out):
    torch.set_num_threads(1)
    out.put([timed(q.get) for _ in range(REPS)])


def produce_pickle(q, done):
    x = torch.randn(*SHAPE).numpy()
    for _ in range(REPS):
        q.put(x)
    done.wait()


def consume_pickle(q, out):
    torch.set_num_threads(1)
    out.put([timed(lambda: torch.from_numpy(q.get())) for _ in range(REPS)])


def consume_file(path, out):
    torch.set_num_threads(1)
    out.put([timed(lambda: torch.load(path)) for _ in range(REPS)])


def run(target, args, producer=None, pargs=()):
    ctx = tmp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=producer, args=pargs) if producer else None
    if p:
        p.start()
    c = ctx.Process(target=target, args=(*args, out))
    c.start()
    res = out.get()
    c.join()
    return p, res


def main():
    torch.set_num_threads(1)
    proc, sock = start_daemon()
    rows = []
    try:
        with tensord.Client(sock) as c:
            c.put("bench.x", torch.randn(*SHAPE))
            _, r = run(consume_tensord, (sock,))
            rows.append(("tensord get + from_dlpack", r))

        ctx = tmp.get_context("spawn")
        q, done = ctx.Queue(), ctx.Event()
        p, r = run(consume_torch_mp, (q,), produce_torch_mp, (q, done))
        done.set()
        p.join()
        rows.append(("torch.multiprocessing shared memory", r))

        q, done = mp.get_context("spawn").Queue(), ctx.Event()
        p, r = run(consume_pickle, (q,), produce_pickle, (q, done))
        done.set()
        p.join()
        rows.append(("pickle through multiprocessing.Queue", r))

        path = "/dev/shm/tensord-pybench.pt"
        torch.save(torch.randn(*SHAPE), path)
        _, r = run(consume_file, (path,))
        os.unlink(path)
        rows.append(("torch.save/load via /dev/shm file", r))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()

    base_get = statistics.median(x[0] for x in rows[0][1])
    base_read = statistics.median(x[1] for x in rows[0][1])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"torch {torch.__version__}; 64 MiB float32, median of {REPS}\n")
    print("| way to reach the tensor in process B | obtain | obtain + read all | "
          "obtain vs tensord | obtain+read vs tensord |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        g = statistics.median(x[0] for x in r)
        a = statistics.median(x[1] for x in r)
        print(f"| {name} | {g * 1e6:.0f} µs | {a * 1e3:.2f} ms | {g / base_get:.1f}× | "
              f"{a / base_read:.2f}× |")


if __name__ == "__main__":
    main()
