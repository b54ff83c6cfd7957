"""The daemon process: its socket, its shutdown, its sharing of mounts."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import libcephfs_proxy
from helpers import REPO, Daemon, RawClient, evict, public_dir, wait_for

FS_NAME = "cephfs"


@pytest.fixture
def own_daemon(ceph_conf, monkeypatch):
    """A private daemon for tests that stop or break it."""
    daemons = []

    def start(*extra: str, path: str | None = None) -> Daemon:
        d = Daemon(path or os.path.join(public_dir("libcephfsd-own-"), "d.sock"), *extra)
        daemons.append(d)
        monkeypatch.setenv("LIBCEPHFSD_SOCKET", d.socket_path)
        return d

    yield start
    for d in daemons:
        d.stop()


def mount(ceph_conf: str, **conf) -> libcephfs_proxy.LibCephFS:
    fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf, conf=conf or None)
    fs.mount(filesystem_name=FS_NAME)
    return fs


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "libcephfsd", "--help"], capture_output=True,
                         text=True, check=True, cwd=REPO).stdout
    for option in ("--socket", "--socket-mode", "--log-level", "--max-io-size",
                   "--shutdown-timeout", "--max-inflight-bytes", "--enable-client-cache",
                   "--cache-ttl", "--python-cpu", "--object-cache", "LIBCEPHFSD_SOCKET",
                   "/run/libcephfsd.sock"):
        assert option in out


def test_socket_from_environment_and_mode(own_daemon, tmp_path, monkeypatch):
    path = os.path.join(public_dir("libcephfsd-env-"), "env.sock")
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", path)
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "libcephfsd", "--socket-mode", "0640"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for(lambda: os.path.exists(path) and _answers(path), what="daemon on $LIBCEPHFSD_SOCKET")
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()
    assert not os.path.exists(path), "the socket must be removed on exit"


def _answers(path: str) -> bool:
    try:
        RawClient(path).close()
        return True
    except OSError:
        return False


def test_refuses_to_start_over_a_live_daemon_and_replaces_a_stale_socket(own_daemon, tmp_path):
    first = own_daemon()
    second = subprocess.run([sys.executable, "-m", "libcephfsd", "--socket", first.socket_path],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert second.returncode == 1
    assert "already answers" in second.stderr
    assert first.alive() and _answers(first.socket_path)
    # A socket file nobody listens on is stale: a new daemon takes it over.
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    d = own_daemon(path=stale)
    assert _answers(stale)
    assert d.stop() == 0
    # Anything else at the path is left alone.
    (tmp_path / "file").write_text("not a socket")
    third = subprocess.run([sys.executable, "-m", "libcephfsd", "--socket",
                            str(tmp_path / "file")], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
    assert third.returncode == 1 and "not a socket" in third.stderr
    assert (tmp_path / "file").read_text() == "not a socket"


def test_clients_fail_clearly_without_a_daemon(tmp_path, monkeypatch, ceph_conf):
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", str(tmp_path / "nobody-here.sock"))
    with pytest.raises(libcephfs_proxy.DaemonUnavailable) as info:
        libcephfs_proxy.LibCephFS(conffile=ceph_conf)
    assert info.value.errno == 107
    assert "nobody-here.sock" in str(info.value) and "LIBCEPHFSD_SOCKET" in str(info.value)
    assert isinstance(info.value, libcephfs_proxy.OSError)


def test_calls_fail_fast_when_the_daemon_dies(own_daemon, ceph_conf):
    d = own_daemon()
    fs = mount(ceph_conf)
    fs.stat("/")
    instance = fs.get_instance_id()
    d.stop(signal.SIGKILL)
    try:
        with pytest.raises(libcephfs_proxy.DaemonUnavailable, match="lost|closed"):
            fs.stat("/")
        with pytest.raises(libcephfs_proxy.DaemonUnavailable):
            fs.stat("/")
    finally:
        evict(ceph_conf, instance)


def test_sigterm_finishes_calls_in_flight_then_cleans_up(own_daemon, ceph_conf, direct_fs,
                                                         workdir):
    """A blocked flock is in flight when SIGTERM arrives: it completes, the
    holder's files are closed, everything is unmounted, the socket removed."""
    d = own_daemon()
    holder, waiter = mount(ceph_conf), mount(ceph_conf)
    path = f"{workdir}/lock"
    fd1 = holder.open(path, "w", 0o644)
    holder.flock(fd1, 2, 1)                      # LOCK_EX, owner 1
    fd2 = waiter.open(path, "r", 0)
    result = {}

    def blocked_flock() -> None:
        try:
            result["ok"] = waiter.flock(fd2, 2, 2)  # blocks until fd1 is closed
        except Exception as exc:
            result["error"] = exc

    sid = waiter._conn.hello.session
    calls_before = _session(d, sid)["calls"]
    t = threading.Thread(target=blocked_flock)
    t.start()
    # A session counts a request when it starts executing it.
    wait_for(lambda: _session(d, sid)["calls"] == calls_before + 1,
             what="the waiter's flock to be in flight")
    assert t.is_alive() and not result
    d.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert not t.is_alive()
    assert result == {"ok": 0}, result
    assert d.proc.wait(60) == 0, d.log()
    assert not os.path.exists(d.socket_path)
    log = d.log()
    assert "shutting down" in log and "unmounted" in log and "shut down" in log
    with pytest.raises(libcephfs_proxy.DaemonUnavailable):
        holder.stat("/")


def _session(d: Daemon, sid: int) -> dict:
    return next(s for s in d.status()["sessions"] if s["id"] == sid)


def test_same_configuration_and_credentials_share_one_mount(proxy_env, ceph_conf):
    daemon = proxy_env
    before = {m["id"] for m in daemon.status()["mounts"]}
    a, b = mount(ceph_conf), mount(ceph_conf)
    c = mount(ceph_conf, client_oc_size="104857600")   # a different recipe
    mounts = [m for m in daemon.status()["mounts"] if m["id"] not in before]
    assert sorted(m["refs"] for m in mounts) == [1, 2]
    assert a.get_instance_id() == b.get_instance_id() != c.get_instance_id()
    a.shutdown()
    # The daemon cleans up a closed session in that session's thread.
    wait_for(lambda: sorted(m["refs"] for m in daemon.status()["mounts"]
                            if m["id"] not in before) == [1, 1], what="a's reference dropped")
    b.shutdown()
    c.shutdown()
    # The last session to leave really unmounts.
    ids = {m["id"] for m in mounts}
    wait_for(lambda: all(f"unmounted <SharedMount #{i} " in daemon.log() for i in ids),
             what="both mounts unmounted")
    assert not ids & {m["id"] for m in daemon.status()["mounts"]}


def test_config_file_content_not_path_decides_sharing(proxy_env, ceph_conf, tmp_path):
    copy = tmp_path / "copy.conf"
    base_conf = Path(ceph_conf).read_text()
    copy.write_text(base_conf)
    changed = tmp_path / "changed.conf"
    changed.write_text(base_conf + "\n[client]\nclient_oc_size = 104857600\n")
    a = libcephfs_proxy.LibCephFS(conffile=ceph_conf)
    a.mount(filesystem_name=FS_NAME)
    b = libcephfs_proxy.LibCephFS(conffile=str(copy))
    b.mount(filesystem_name=FS_NAME)
    c = libcephfs_proxy.LibCephFS(conffile=str(changed))
    c.mount(filesystem_name=FS_NAME)
    assert a.get_instance_id() == b.get_instance_id() != c.get_instance_id()
    assert c.conf_get("client_oc_size") == "104857600"
    for fs in (a, b, c):
        fs.shutdown()


@pytest.mark.parametrize("args, size, dirty", [
    ((), 512 << 20, 256 << 20),                          # the daemon's default
    (("--object-cache", "64M"), 64 << 20, 32 << 20),
    (("--object-cache", "libcephfs"), 200 << 20, 100 << 20),
])
def test_a_shared_mount_gets_the_daemons_object_cache(own_daemon, ceph_conf, args, size, dirty):
    own_daemon(*args)
    fs = mount(ceph_conf)
    assert (fs.conf_get("client_oc_size"), fs.conf_get("client_oc_max_dirty")) == (
        str(size), str(dirty))
    # A size the client's configuration chose is the client's, whatever the daemon's.
    chosen = mount(ceph_conf, client_oc_size="52428800", client_oc_max_dirty="10485760")
    assert chosen.get_instance_id() != fs.get_instance_id()
    assert (chosen.conf_get("client_oc_size"), chosen.conf_get("client_oc_max_dirty")) == (
        "52428800", "10485760")
    for each in (fs, chosen):
        each.shutdown()


def test_bytes_in_flight_are_capped_with_backpressure(own_daemon, ceph_conf, workdir):
    d = own_daemon("--max-io-size", "1M", "--max-inflight-bytes", "2M")
    errors = []
    # All writers start at once: more than two 1 MiB pieces must be in
    # flight together for the cap to make one wait.
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            fs = mount(ceph_conf)
            data = os.urandom((6 << 20) + n)
            fd = fs.open(f"{workdir}/big{n}", "w", 0o644)
            start.wait(60)
            assert fs.write(fd, data, 0) == len(data)
            fs.close(fd)
            fd = fs.open(f"{workdir}/big{n}", "r")
            assert fs.read(fd, 0, len(data) + 10) == data
            fs.close(fd)
            fs.shutdown()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    budget = d.status()["inflight_bytes"]
    assert budget["limit"] == 2 << 20 and budget["used"] == 0
    assert budget["peak"] <= 2 << 20 and budget["waits"] > 0


def test_sigint_shuts_down_like_sigterm(own_daemon, ceph_conf):
    d = own_daemon()
    fs = mount(ceph_conf)
    fd = fs.open("/", os.O_RDONLY | os.O_DIRECTORY)
    assert d.status()["totals"]["open_files"] == 1
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(60) == 0, d.log()
    assert not os.path.exists(d.socket_path)
    assert "received SIGINT" in d.log() and "unmounted" in d.log()
    with pytest.raises(libcephfs_proxy.DaemonUnavailable):
        fs.fstat(fd)


def test_the_descriptor_limit_is_raised_to_the_hard_limit(tmp_path):
    sock = os.path.join(public_dir("libcephfsd-fd-"), "d.sock")
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(["bash", "-c", f'ulimit -Sn 512; exec "{sys.executable}" -m '
                             f'libcephfsd --socket {sock}'], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_for(lambda: os.path.exists(sock) and _answers(sock), what="the daemon")
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft, hard = next(line.split()[3:5] for line in limits.splitlines()
                          if line.startswith("Max open files"))
        assert soft == hard
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


def test_sigusr1_dumps_every_thread_stack(own_daemon):
    d = own_daemon()
    d.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "serve_forever" in d.log(), what="a stack dump in the log")
    assert d.alive() and "most recent call first" in d.log()


def _threads(pid: int) -> list[tuple[int, str]]:
    """(tid, name) of a process's threads; those that end meanwhile are left out."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.append((int(task.name), (task / "comm").read_text().strip()))
        except FileNotFoundError:
            pass
    return found


def _affinity(pid: int, tid: int) -> set[int]:
    return os.sched_getaffinity(tid) if os.path.exists(f"/proc/{pid}/task/{tid}") else set()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="pinning is only visible with two CPUs or more")
@pytest.mark.parametrize("choice", ["0", "any"])
def test_connection_threads_share_one_cpu_and_libcephfs_threads_keep_all(own_daemon,
                                                                           ceph_conf, choice):
    d = own_daemon("--python-cpu", choice)
    fs = mount(ceph_conf)
    fs.stat("/")
    status = d.status()
    allowed = set(status["placement"]["allowed"])
    assert allowed == os.sched_getaffinity(d.proc.pid)
    pinned = None if choice == "any" else int(choice)
    assert status["placement"]["python_cpu"] == pinned
    (session,) = [s for s in status["sessions"] if s["state"] == "mounted"]
    assert _affinity(d.proc.pid, session["thread"]) == ({pinned} if pinned is not None
                                                         else allowed)
    # The mount's messenger threads were made by a configuration thread,
    # released before it called libcephfs.
    messengers = [tid for tid, comm in _threads(d.proc.pid) if comm.startswith("msgr-worker")]
    assert messengers
    for tid in messengers:
        assert _affinity(d.proc.pid, tid) == allowed
    fs.shutdown()


def test_python_cpu_must_be_usable():
    proc = subprocess.run([sys.executable, "-m", "libcephfsd", "--python-cpu", "4096"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not one this process may use" in proc.stderr


@pytest.mark.parametrize("value, message", [("0", "must be at least"), ("lots", "not a size"),
                                            ("2048G", "must be at most")])
def test_object_cache_must_be_a_size(value, message):
    proc = subprocess.run([sys.executable, "-m", "libcephfsd", "--object-cache", value],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
