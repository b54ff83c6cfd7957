"""Many clients at once: a slow call stalls nobody else, parallel work stays correct."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading

from helpers import wait_for

LOCK_EX, LOCK_UN = 2, 8


def test_a_blocked_call_does_not_stall_other_clients(connect, workdir, proxy_env):
    holder, waiter, other = connect(), connect(), connect()
    path = f"{workdir}/lock"
    fd = holder.open(path, "w", 0o644)
    holder.flock(fd, LOCK_EX, 1)
    wfd = waiter.open(path, "r", 0)
    done = threading.Event()

    def wait_for_lock() -> None:
        waiter.flock(wfd, LOCK_EX, 2)      # blocks inside libcephfs
        done.set()

    sid = waiter._conn.hello.session
    calls = next(s["calls"] for s in proxy_env.status()["sessions"] if s["id"] == sid)
    t = threading.Thread(target=wait_for_lock)
    t.start()
    wait_for(lambda: next(s["calls"] for s in proxy_env.status()["sessions"]
                          if s["id"] == sid) == calls + 1, what="the flock in flight")
    # While the waiter's call is stuck in libcephfs, everyone else proceeds.
    for i in range(200):
        assert other.stat(workdir).st_ino
    ofd = other.open(f"{workdir}/other", "w", 0o644)
    other.write(ofd, os.urandom(8 << 20), 0)
    other.close(ofd)
    assert not done.is_set(), "the waiter should still be blocked"
    holder.flock(fd, LOCK_UN, 1)
    t.join(30)
    assert done.is_set()
    waiter.flock(wfd, LOCK_UN, 2)


WORKER = r"""
import hashlib, os, sys, libcephfs_proxy as cephfs
conf, base, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fs = cephfs.LibCephFS(conffile=conf)
fs.mount(filesystem_name="cephfs")
fs.mkdir(f"{base}/w{n}", 0o755)
fs.chdir(f"{base}/w{n}")
digests = {}
for i in range(20):
    data = os.urandom((i * 37 % 11 + 1) * 65536)
    fd = fs.open(f"f{i % 5}", "w", 0o644)
    fs.write(fd, data, 0)
    fs.close(fd)
    digests[f"f{i % 5}"] = hashlib.sha256(data).hexdigest()
    name = f"f{(i * 3) % 5}"
    if name in digests:
        fd = fs.open(name, "r")
        back = fs.read(fd, 0, 1 << 20)
        fs.close(fd)
        assert hashlib.sha256(back).hexdigest() == digests[name], (n, i, name)
    if i % 7 == 6:
        fs.unlink(name)
        del digests[name]
assert fs.getcwd() == f"{base}/w{n}".encode()
print(" ".join(f"{k}={v}" for k, v in sorted(digests.items())))
fs.shutdown()
"""


def test_parallel_client_processes_each_see_their_own_data(proxy_env, ceph_conf, workdir,
                                                           direct_fs):
    env = {**os.environ, "LIBCEPHFSD_SOCKET": proxy_env.socket_path}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, ceph_conf, workdir, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for n in range(12)]
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        # What each client wrote through the daemon is what a direct client reads.
        for item in out.decode().split():
            name, digest = item.split("=")
            path = f"{workdir}/w{n}/{name}"
            fd = direct_fs.open(path, "r")
            data = direct_fs.read(fd, 0, 1 << 20)
            direct_fs.close(fd)
            assert hashlib.sha256(data).hexdigest() == digest
