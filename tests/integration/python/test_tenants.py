"""Tenant isolation with real users: two tenants (each a uid in a group of its own) and a
stranger talk to one daemon from processes running as those users. Identity comes from the
socket's peer credentials; nothing a client sends can change it.

Needs root (to create the users and run processes as them); skipped otherwise, saying so.
"""

import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import tensord
from conftest import wait_serving

TENSORD_BIN = os.path.abspath(os.environ.get("TENSORD_BIN", "build/daemon/tensord"))
USERS = ("tdalice", "tdbob", "tdeve")  # eve is in no tenant

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: creates users and runs clients as them")


def _userdel(name):
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture(scope="module")
def users():
    for name in USERS:
        _userdel(name)  # a leftover of an interrupted run
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/false",
                        name], check=True, capture_output=True)
    yield {name: pwd.getpwnam(name) for name in USERS}
    for name in USERS:
        _userdel(name)


CONFIG = """
[daemon]
socket_mode = "0666"
persist = false
[host]
capacity = "160MiB"
prefault = false

[[tenant]]
name = "alice"
uids = [{alice}]
gids = [{alice_gid}]
namespaces = ["alice", "alice.*"]
host_bytes = "48MiB"
max_leases = 8
max_sessions = 3

[[tenant]]
name = "bob"
uids = ["tdbob"]
gids = ["tdbob"]
namespaces = ["bob"]
host_bytes = "48MiB"
"""


@pytest.fixture(scope="module")
def daemon(users):
    run_dir = tempfile.mkdtemp(prefix="tensord-tenants-")
    os.chmod(run_dir, 0o755)  # the users reach the socket inside
    config = os.path.join(run_dir, "tensord.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(alice=users["tdalice"].pw_uid, alice_gid=users["tdalice"].pw_gid))
    proc = subprocess.Popen([TENSORD_BIN, "--config", config, "--run-dir", run_dir,
                             "--log-level", "warn"])
    sock = os.path.join(run_dir, "tensord.sock")
    wait_serving(proc, sock)
    yield sock
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, "tensord did not stop cleanly"
    subprocess.run(["rm", "-rf", run_dir])


def as_user(user, code, sock, *args):
    """Runs `code` as `user` (a real process with that uid and gid); returns its JSON output."""
    pw = pwd.getpwnam(user)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p),
               HOME="/")
    r = subprocess.run([sys.executable, "-c", PRELUDE + code, sock, *args], env=env,
                       capture_output=True, text=True, timeout=120, user=pw.pw_uid,
                       group=pw.pw_gid, extra_groups=[])
    assert r.returncode == 0, f"{user}: {r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, os, sys
import numpy as np
import tensord
sock = sys.argv[1]
def code_of(f):
    try:
        f()
        return "OK"
    except tensord.Error as e:
        return e.code_name
"""


def test_tenant_reads_and_writes_its_own_namespaces(daemon):
    out = as_user("tdalice", """
with tensord.Client(sock, namespace="alice.kv") as c:
    c.put("w", np.arange(1 << 16, dtype=np.float32))
    got = float(c.get("w").numpy().sum())
    keys = [t["key"] for t in c.ls()]
    st = c.stats()
print(json.dumps({"sum": got, "keys": keys, "tenants": [t["tenant"] for t in st["tenants"]]}))
""", daemon)
    assert out["sum"] == float(np.arange(1 << 16, dtype=np.float32).sum())
    assert out["keys"] == ["w"]
    assert out["tenants"] == ["alice"]  # a tenant sees its own statistics only


def test_other_tenant_is_denied_by_every_route(daemon, users):
    as_user("tdalice", """
with tensord.Client(sock, namespace="alice") as c:
    c.put("secret", np.full(4096, 7, dtype=np.uint8))
print(json.dumps({}))
""", daemon)
    out = as_user("tdbob", """
c = tensord.Client(sock, namespace="alice")
codes = {
    "get": code_of(lambda: c.get("secret")),
    "stat": code_of(lambda: c.stat("secret")),
    "ls": code_of(lambda: c.ls()),
    "delete": code_of(lambda: c.delete("secret")),
    "evict": code_of(lambda: c.evict("secret")),
    "hint": code_of(lambda: c.hint(["secret"])),
    "prefetch": code_of(lambda: c.prefetch(["secret"])),
    "create": code_of(lambda: c.put("mine", np.zeros(16, dtype=np.uint8))),
}
print(json.dumps(codes))
""", daemon)
    assert out == {k: "PERMISSION_DENIED" for k in out}, out
    # Nor by opening alice's segment: it is in alice's group, mode 0660.
    alice_gid = users["tdalice"].pw_gid
    segs = [n for n in os.listdir("/dev/shm") if n.startswith("tensord.")
            and os.stat(os.path.join("/dev/shm", n)).st_gid == alice_gid]
    assert segs, "alice's segment is in her group"
    for name in segs:
        assert os.stat(os.path.join("/dev/shm", name)).st_mode & 0o777 == 0o660
    out = as_user("tdbob", """
def try_open(name, mode):
    try:
        os.close(os.open("/dev/shm/" + name, mode))
        return "opened"
    except PermissionError:
        return "denied"
print(json.dumps(sorted({try_open(n, m) for n in sys.argv[2:] for m in (os.O_RDONLY, os.O_RDWR)})))
""", daemon, *segs)
    assert out == ["denied"]
    # alice's bytes are untouched.
    out = as_user("tdalice", """
with tensord.Client(sock, namespace="alice") as c:
    print(json.dumps({"ok": bool((c.get("secret").numpy() == 7).all())}))
""", daemon)
    assert out["ok"]


def test_stranger_may_not_attach(daemon):
    out = as_user("tdeve", """
print(json.dumps({"attach": code_of(lambda: tensord.Client(sock, namespace="alice"))}))
""", daemon)
    assert out["attach"] == "PERMISSION_DENIED"


def test_operator_sees_every_tenant(daemon):
    out = as_user("tdbob", """
c = tensord.Client(sock, namespace="alice")
print(json.dumps({"stat": code_of(lambda: c.stat("anything"))}))
""", daemon)
    assert out["stat"] == "PERMISSION_DENIED"
    with tensord.Client(daemon, namespace="alice.ops") as c:  # root: the operator
        c.put("by-root", np.zeros(8192, dtype=np.uint8))
        assert c.stat("by-root")["pool"] == "tenant.alice"  # alice's namespace, alice's memory
        tenants = {t["tenant"]: t for t in c.stats()["tenants"]}
        c.delete("by-root")
    assert set(tenants) == {"", "alice", "bob"}
    assert tenants["alice"]["host_capacity_bytes"] == 48 << 20
    assert tenants["alice"]["host_used_bytes"] >= 8192
    assert tenants["bob"]["denied_requests"] >= 1


def test_lease_and_session_quotas(daemon):
    out = as_user("tdalice", """
with tensord.Client(sock, namespace="alice.q") as c:
    c.put("x", np.zeros(64, dtype=np.uint8))
    held, code = [], "OK"
    for i in range(20):
        try:
            held.append(c.get("x"))
        except tensord.Error as e:
            code = e.code_name
            break
    n = len(held)
    held.clear()
    import gc; gc.collect()
    again = code_of(lambda: c.get("x"))   # released leases count no more
    others = [tensord.Client(sock, namespace="alice.q") for _ in range(2)]  # 3 sessions now
    fourth = code_of(lambda: tensord.Client(sock, namespace="alice.q"))
print(json.dumps({"held": n, "code": code, "again": again, "fourth": fourth}))
""", daemon)
    assert out["held"] <= 8 and out["code"] == "RESOURCE_EXHAUSTED", out
    assert out["again"] == "OK"
    assert out["fourth"] == "RESOURCE_EXHAUSTED"


def test_quota_of_one_tenant_does_not_starve_the_other(daemon):
    # bob stores CACHE tensors; alice then floods her memory with CACHE tensors: only hers are
    # evicted, bob's bytes are all still there.
    out = as_user("tdbob", """
with tensord.Client(sock, namespace="bob") as c:
    for i in range(8):
        c.put(f"b{i}", np.full(1 << 20, i, dtype=np.uint8), durability="cache")
print(json.dumps({}))
""", daemon)
    out = as_user("tdalice", """
n_ok = 0
codes = set()
with tensord.Client(sock, namespace="alice.flood") as c:
    for i in range(120):   # 120 MiB into 48 MiB: alice's CACHE tensors are evicted
        try:
            c.put(f"f{i}", np.full(1 << 20, 1, dtype=np.uint8), durability="cache")
            n_ok += 1
        except tensord.Error as e:
            codes.add(e.code_name)
    # DURABLE beyond her memory: RESOURCE_EXHAUSTED (no SSD tier here), never bob's room.
    durable = []
    for i in range(60):
        try:
            c.put(f"d{i}", np.full(1 << 20, 2, dtype=np.uint8))
        except tensord.Error as e:
            durable.append(e.code_name)
            break
print(json.dumps({"ok": n_ok, "codes": sorted(codes), "durable": durable}))
""", daemon)
    assert out["ok"] == 120 and out["codes"] == [], out
    assert out["durable"] == ["RESOURCE_EXHAUSTED"]
    out = as_user("tdbob", """
with tensord.Client(sock, namespace="bob") as c:
    ok = [bool((c.get(f"b{i}").numpy() == i).all()) for i in range(8)]
    # and bob still has all of his memory to use
    for i in range(30):
        c.put(f"more{i}", np.zeros(1 << 20, dtype=np.uint8))
print(json.dumps({"ok": ok}))
""", daemon)
    assert out["ok"] == [True] * 8
