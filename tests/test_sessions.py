"""Per-client virtual state, and what happens to it when a client goes away."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading

import pytest

import libcephfs_proxy
from helpers import wait_for

FS_NAME = "cephfs"

CLIENT_HOLDING_HANDLES = r"""
import sys, libcephfs_proxy as cephfs
conf, base, nfiles = sys.argv[1], sys.argv[2], int(sys.argv[3])
fs = cephfs.LibCephFS(conffile=conf)
fs.mount(filesystem_name="cephfs")
fds = [fs.open(f"{base}/f{i}", "w", 0o644) for i in range(nfiles)]
# More entries than one LISTDIR returns, so that each opendir holds a handle
# in the daemon (a small directory is read whole and closed there at once).
fs.mkdir(f"{base}/big", 0o755)
for i in range(cephfs._libcephfs.READDIR_BATCH + 1):
    fs.close(fs.open(f"{base}/big/e{i}", "w", 0o644))
dirs = [fs.opendir(f"{base}/big") for _ in range(3)]
print(fs._conn.hello.session, flush=True)
sys.stdin.read()          # hold everything until killed or stdin closes
"""


def totals(daemon) -> dict:
    """The daemon's totals, sessions counted only if they hold a mount: each
    status() asks on a short-lived connection of its own, and the daemon may
    still be tearing down an earlier one (seen both ways: 2 != 1, 1 != 2)."""
    status = daemon.status()
    out = dict(status["totals"])
    out["sessions"] = sum(1 for s in status["sessions"] if s["mount"] is not None)
    return out


def settled_totals(daemon, expected: dict) -> dict:
    """totals() once it equals *expected*, or the last one seen: a mount
    reference is released as the session's connection thread finishes."""
    last: list = []

    def same() -> bool:
        last[:] = [totals(daemon)]
        return last[0] == expected
    try:
        wait_for(same, timeout=5, what="the daemon's totals to settle")
    except AssertionError:
        pass
    return last[0]


def session_ids(daemon) -> set[int]:
    return {s["id"] for s in daemon.status()["sessions"]}


def start_holder(daemon, ceph_conf, base, nfiles):
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_HOLDING_HANDLES, ceph_conf, base,
                             str(nfiles)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "LIBCEPHFSD_SOCKET": daemon.socket_path})
    sid = int(proc.stdout.readline())
    return proc, sid


def test_kill_9_releases_every_file_directory_and_mount_reference(proxy_env, ceph_conf,
                                                                   workdir):
    daemon = proxy_env
    before = totals(daemon)
    proc, sid = start_holder(daemon, ceph_conf, workdir, 7)
    session = next(s for s in daemon.status()["sessions"] if s["id"] == sid)
    assert (session["open_files"], session["open_dirs"]) == (7, 3)
    assert totals(daemon)["open_files"] == before["open_files"] + 7
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stdin.close()
    wait_for(lambda: sid not in session_ids(daemon), what="the killed client's session to end")
    after = settled_totals(daemon, before)
    assert (after["open_files"], after["open_dirs"], after["sessions"]) == \
        (before["open_files"], before["open_dirs"], before["sessions"])
    assert after["mounts"] == before["mounts"]
    assert daemon.alive()


def test_clean_exit_without_shutdown_releases_too(proxy_env, ceph_conf, workdir):
    daemon = proxy_env
    before = totals(daemon)
    proc, sid = start_holder(daemon, ceph_conf, workdir, 2)
    proc.stdin.close()   # the client returns from its script without closing anything
    assert proc.wait(30) == 0
    proc.stdout.close()
    wait_for(lambda: sid not in session_ids(daemon), what="the session to end")
    assert settled_totals(daemon, before) == before


def test_chdir_and_umask_are_per_client(connect, direct_fs, workdir):
    a, b = connect(), connect()
    assert a.get_instance_id() == b.get_instance_id(), "same config: one shared mount"
    direct_fs.mkdir(f"{workdir}/only-a", 0o755)
    a.chdir(f"{workdir}/only-a")
    assert a.getcwd() == f"{workdir}/only-a".encode()
    assert b.getcwd() == b"/"
    fd = a.open("here", "w", 0o644)
    a.close(fd)
    assert direct_fs.stat(f"{workdir}/only-a/here").st_size == 0
    try:
        b.stat("here")
        raise AssertionError("b resolved a relative path against a's cwd")
    except libcephfs_proxy.ObjectNotFound:
        pass
    assert a.umask(0o077) == 0o077
    assert b.umask(0o002) == 0o002
    # libcephfs applies no umask to creation modes; neither client's umask leaks.
    fd = b.open(f"{workdir}/mode", "w", 0o666)
    b.close(fd)
    assert direct_fs.stat(f"{workdir}/mode").st_mode & 0o777 == 0o666


def test_fds_and_dir_handles_belong_to_their_session(connect, workdir, direct_fs):
    a, b = connect(), connect()
    fd = a.open(f"{workdir}/mine", "w", 0o644)
    a.write(fd, b"secret", 0)
    for call in (lambda: b.read(fd, 0, 10), lambda: b.write(fd, b"x", 0),
                 lambda: b.fstat(fd), lambda: b.close(fd)):
        try:
            call()
            raise AssertionError("another session used a's fd")
        except libcephfs_proxy.OSError as exc:
            assert exc.errno == 9
    for i in range(libcephfs_proxy._libcephfs.READDIR_BATCH + 1):   # a handle in the daemon
        direct_fs.close(direct_fs.open(f"{workdir}/e{i}", "w", 0o644))
    d = a.opendir(workdir)
    assert d.handle > 0
    d._entries.clear()
    d.lib = b                      # smuggle a's handle number into b's session
    try:
        d.readdir()
        raise AssertionError("another session read a's directory handle")
    except libcephfs_proxy.OSError as exc:
        assert exc.errno == 9 and "not open in this session" in str(exc)
    d.handle = None
    a.close(fd)


def test_a_mounted_client_process_never_loads_libcephfs(proxy_env, ceph_conf):
    code = ("import sys, libcephfs_proxy as c; fs = c.LibCephFS(conffile=sys.argv[1]); "
            "fs.mount(filesystem_name='cephfs'); fs.stat('/'); fs.stat('/'); "
            "maps = open('/proc/self/maps').read(); "
            "assert 'libcephfs.so' not in maps and 'librados' not in maps, maps; "
            "assert 'cephfs' not in sys.modules; print(fs._conn.cache is not None)")
    out = subprocess.run([sys.executable, "-c", code, ceph_conf], capture_output=True,
                         text=True, env={**os.environ,
                                         "LIBCEPHFSD_SOCKET": proxy_env.socket_path})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("True", "False")


def test_one_client_many_threads(connect, workdir):
    fs = connect()
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                path = f"{workdir}/t{n}-{i}"
                fd = fs.open(path, "w", 0o644)
                payload = f"{n}:{i}".encode() * 50
                fs.write(fd, payload, 0)
                fs.close(fd)
                fd = fs.open(path, "r")
                assert fs.read(fd, 0, 10000) == payload
                fs.close(fd)
                assert fs.stat(path).st_size == len(payload)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_forked_child_cannot_use_the_parents_connection(fs):
    fs.stat("/")
    pid = os.fork()
    if pid == 0:
        try:
            fs.stat("/")
            code = 1
        except libcephfs_proxy.DaemonUnavailable:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fs.stat("/").st_ino == 1, "the parent's connection still works"


def test_remount_after_unmount_replays_the_configuration(proxy_env, ceph_conf):
    fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf, conf={"client_oc_size": "52428800"})
    fs.mount(filesystem_name=FS_NAME)
    fd = fs.open("/", os.O_RDONLY | os.O_DIRECTORY)
    fs.unmount()
    fs.mount(filesystem_name=FS_NAME)
    assert fs.conf_get("client_oc_size") == "52428800"
    try:
        fs.fstat(fd)
        raise AssertionError("an fd survived unmount")
    except libcephfs_proxy.OSError as exc:
        assert exc.errno == 9
    fs.shutdown()


def test_status_is_refused_to_other_users(proxy_env):
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers import RawClient; "
            "from libcephfsd.protocol import Op; r = RawClient(sys.argv[1]); "
            "rep = r.request(Op.STATUS); print(rep.errno)")
    out = subprocess.run([sys.executable, "-c", code, proxy_env.socket_path], user=65534,
                         group=65534, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == str(errno.EPERM)


def test_closing_a_read_only_file_does_not_wait_but_is_done_before_the_next_call(
        connect, direct_fs, workdir):
    a, b = connect(), connect()
    fd = a.open(f"{workdir}/f", "w", 0o644)
    a.write(fd, b"data", 0)
    a.close(fd)
    sid = a._conn.hello.session

    def held() -> int:
        return next(s for s in a._conn.call(libcephfs_proxy._libcephfs.Op.STATUS)[0]["sessions"]
                    if s["id"] == sid)["open_files"]

    for _ in range(50):
        fd = a.open(f"{workdir}/f", "r")
        assert a.read(fd, 0, 10) == b"data"
        a.close(fd)                       # posted: its reply is read before the next one
    assert len(a._conn._posted) == 1      # the last one's reply not read yet
    assert held() == 0 and not a._conn._posted
    with pytest.raises(libcephfs_proxy.OSError) as exc:
        a.close(fd)                       # a second close is waited for, and refused
    assert exc.value.errno == errno.EBADF
    # A read-only fd that held a lock: its close is waited for, so the lock
    # is free for another client the moment close returns.
    fd = a.open(f"{workdir}/f", "r")
    a.flock(fd, fcntl.LOCK_EX, 1)
    assert fd not in a._readonly_fds
    a.close(fd)
    fd2 = b.open(f"{workdir}/f", "r")
    b.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 2)
    b.close(fd2)
    # Files opened for writing are closed synchronously (close reports errors).
    fd = a.open(f"{workdir}/f", "r+")
    assert fd not in a._readonly_fds
    a.close(fd)
    assert held() == 0
