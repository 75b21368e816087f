#!/usr/bin/python3
"""What tenant isolation costs per call: the same client loop (Get + release of a 4 KiB tensor,
Stat, and a put of 64 KiB) run against one daemon with two [[tenant]]s, once as the operator
(root: no namespace or session checks) and once as a tenant's user (checks on every call),
interleaved in rounds; prints medians of per-call time and the tenant/operator ratio. Also the
connection cost (Client() open + close, which now goes through the daemon's own accept and
SO_PEERCRED). Needs root (creates a user).

  PYTHONPATH=build/python /usr/bin/python3 tests/bench/tenant_bench.py [--tensord build/daemon/tensord]
      [--rounds 5] [--calls 2000]
"""

import argparse
import json
import os
import pwd
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import tensord

LOOP = r"""
import json, sys, time
import numpy as np
import tensord
sock, calls = sys.argv[1], int(sys.argv[2])
out = {}
t0 = time.perf_counter()
for _ in range(50):
    tensord.Client(sock, namespace="bench").close()
out["connect_us"] = (time.perf_counter() - t0) / 50 * 1e6
with tensord.Client(sock, namespace="bench") as c:
    try:
        c.delete("x")
    except tensord.Error:
        pass
    c.put("x", np.zeros(4096, dtype=np.uint8))
    t0 = time.perf_counter()
    for _ in range(calls):
        c.get("x").release()
    out["get_us"] = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(calls):
        c.stat("x")
    out["stat_us"] = (time.perf_counter() - t0) / calls * 1e6
    data = np.ones(65536, dtype=np.uint8)
    t0 = time.perf_counter()
    for i in range(calls // 4):
        c.put(f"p{i}", data, durability="cache")
        c.delete(f"p{i}")
    out["put_delete_us"] = (time.perf_counter() - t0) / (calls // 4) * 1e6
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensord", default="build/daemon/tensord")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("tenant_bench needs root: it creates a user and runs a client as it")
    user = "tdbench"
    subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["groupdel", user], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/false", user],
                   check=True)
    pw = pwd.getpwnam(user)
    run_dir = tempfile.mkdtemp(prefix="tensord-tenant-bench-")
    os.chmod(run_dir, 0o755)
    config = os.path.join(run_dir, "tensord.toml")
    with open(config, "w") as f:
        f.write(f"""[daemon]\nsocket_mode = "0666"\npersist = false\n[host]\ncapacity = "256MiB"\n
[[tenant]]\nname = "bench"\nuids = [{pw.pw_uid}]\ngids = [{pw.pw_gid}]\nnamespaces = ["bench"]
host_bytes = "64MiB"\n
[[tenant]]\nname = "other"\ngids = [65000]\nnamespaces = ["other"]\nhost_bytes = "64MiB"\n""")
    proc = subprocess.Popen([os.path.abspath(args.tensord), "--config", config, "--run-dir",
                             run_dir, "--log-level", "warn", "--no-prefault"])
    sock = os.path.join(run_dir, "tensord.sock")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                tensord.Client(sock, timeout=0.5).close()
                break
            except tensord.Error:
                if time.monotonic() > deadline:
                    sys.exit("tensord did not start")
                time.sleep(0.05)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path
                                                          if p))
        results = {"operator": [], "tenant": []}
        for _ in range(args.rounds):
            for who in ("operator", "tenant"):
                kw = {} if who == "operator" else {"user": pw.pw_uid, "group": pw.pw_gid,
                                                   "extra_groups": []}
                r = subprocess.run([sys.executable, "-c", LOOP, sock, str(args.calls)], env=env,
                                   capture_output=True, text=True, check=True, **kw)
                results[who].append(json.loads(r.stdout))
        print(f"tenant isolation per call, {args.rounds} interleaved rounds of {args.calls} "
              f"calls (medians, microseconds)")
        print(f"{'call':<16}{'operator':>10}{'tenant':>10}{'ratio':>8}")
        for k in ("connect_us", "get_us", "stat_us", "put_delete_us"):
            op = statistics.median(x[k] for x in results["operator"])
            te = statistics.median(x[k] for x in results["tenant"])
            print(f"{k[:-3]:<16}{op:>10.1f}{te:>10.1f}{te / op:>8.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", run_dir])
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", user], capture_output=True)


if __name__ == "__main__":
    main()
