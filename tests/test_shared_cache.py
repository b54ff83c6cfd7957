"""The shared answer table (SHARED_CACHE): one mount's clients answer each other."""

from __future__ import annotations

import errno
import mmap
import os

import libcephfs_proxy as proxy
import pytest
from helpers import Daemon, RawClient, public_dir

from libcephfsd import protocol, shared
from libcephfsd.protocol import Feature, Op


@pytest.fixture(scope="module")
def cached_daemon():
    d = Daemon(os.path.join(public_dir("libcephfsd-shared-"), "d.sock"),
               "--enable-client-cache", "--cache-ttl", "30")
    yield d
    assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log()


@pytest.fixture
def clients(cached_daemon, ceph_conf, monkeypatch):
    """Factory of mounted clients of the same mount (same config and credentials)."""
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", cached_daemon.socket_path)
    made = []

    def make():
        fs = proxy.LibCephFS(conffile=ceph_conf)
        fs.mount(filesystem_name="cephfs")
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.shutdown()


def _calls(daemon: Daemon, fs) -> int:
    sid = fs._conn.hello.session
    return next(s["calls"] for s in daemon.status()["sessions"] if s["id"] == sid)


def test_one_clients_answer_serves_another_without_a_round_trip(clients, cached_daemon,
                                                                 direct_fs, workdir):
    a, b = clients(), clients()
    path = f"{workdir}/f".encode()
    fd = direct_fs.open(path, os.O_CREAT | os.O_WRONLY, 0o640)
    direct_fs.close(fd)
    st = a.stat(path)
    assert b.lstat(path) is not None                   # opens the table: one round trip
    before = _calls(cached_daemon, b)
    for _ in range(3):
        assert b.stat(path).st_mode == st.st_mode     # the table: no call at all
    with pytest.raises(proxy.ObjectNotFound):
        a.stat(f"{workdir}/missing")
    with pytest.raises(proxy.ObjectNotFound) as exc:
        b.stat(f"{workdir}/missing")                    # a shared "no such file"
    assert _calls(cached_daemon, b) == before          # not one call from b
    assert b._conn.cache.stats.shared >= 4
    assert "missing" in str(exc.value)
    mounts = cached_daemon.status()["mounts"]
    assert [m["shared_cache"]["fills"] > 0 for m in mounts if m["refs"] >= 2] == [True]


def test_a_change_through_the_daemon_is_seen_by_every_client_at_once(clients, workdir):
    a, b, c = clients(), clients(), clients()
    path = f"{workdir}/g"
    fd = a.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    a.close(fd)
    assert a.stat(path).st_mode & 0o777 == 0o644
    assert b.stat(path).st_mode & 0o777 == 0o644        # filled by a, read by b
    c.chmod(path, 0o600)
    assert b.stat(path).st_mode & 0o777 == 0o600
    assert a.stat(path).st_mode & 0o777 == 0o600
    with pytest.raises(proxy.ObjectNotFound):
        b.stat(f"{path}-new")
    with pytest.raises(proxy.ObjectNotFound):
        a.stat(f"{path}-new")                           # now shared
    c.rename(path, f"{path}-new")
    assert a.stat(f"{path}-new").st_mode & 0o777 == 0o600
    with pytest.raises(proxy.ObjectNotFound):
        b.stat(path)
    c.symlink(b"target-1", f"{path}-link")
    assert a.readlink(f"{path}-link", 100) == b"target-1"
    assert b.readlink(f"{path}-link", 100) == b"target-1"
    c.unlink(f"{path}-link")
    c.symlink(b"target-2", f"{path}-link")
    assert b.readlink(f"{path}-link", 100) == b"target-2"


def test_relative_paths_are_not_shared(clients, direct_fs, workdir):
    a, b = clients(), clients()
    for name in ("x", "y"):
        direct_fs.mkdir(f"{workdir}/{name}", 0o755)
        fd = direct_fs.open(f"{workdir}/{name}/f", os.O_CREAT | os.O_WRONLY, 0o600
                            if name == "x" else 0o644)
        direct_fs.close(fd)
    a.chdir(f"{workdir}/x")
    b.chdir(f"{workdir}/y")
    assert a.stat("f").st_mode & 0o777 == 0o600
    assert b.stat("f").st_mode & 0o777 == 0o644         # not a's answer
    assert shared.key_of(Op.STAT, (b"f", True)) is None
    assert shared.key_of(Op.FSTAT, (3,)) is None
    assert shared.key_of(Op.STAT, (b"/f", True)) is not None


def test_unmount_drops_the_table_and_a_new_mount_gets_its_own(clients, workdir):
    a = clients()
    a.stat(workdir)
    view = a._conn._shared
    assert isinstance(view, shared.SharedView)
    a.unmount()
    assert a._conn._shared is None
    a.mount(filesystem_name="cephfs")
    a.stat(workdir)
    assert isinstance(a._conn._shared, shared.SharedView) and a._conn._shared is not view


def test_opting_out(clients, monkeypatch, workdir):
    monkeypatch.setenv("LIBCEPHFS_PROXY_SHARED_CACHE", "0")
    a = clients()
    assert Feature.SHARED_CACHE not in a._conn.hello.features
    a.stat(workdir)
    assert a._conn._shared is False


def test_shared_cache_bad_input(cached_daemon, daemon, ceph_conf):
    def raw_client(path: str, features: int) -> RawClient:
        raw = RawClient(path, hello=False)
        raw.hello = raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, features])
        return raw

    both = int(Feature.CLIENT_CACHE | Feature.SHARED_CACHE)
    with raw_client(cached_daemon.socket_path, int(Feature.CLIENT_CACHE)) as raw:
        assert raw.request(Op.SHARED_CACHE).errno == errno.EPROTO      # not negotiated
    with raw_client(cached_daemon.socket_path, both) as raw:
        assert Feature.SHARED_CACHE in Feature(raw.hello["features"])
        assert raw.request(Op.SHARED_CACHE).errno != 0                  # not mounted
        raw.call(Op.CREATE, [None])
        with open(ceph_conf, "rb") as f:
            raw.call(Op.CONF_READ_FILE, [ceph_conf, f.read()])
        raw.call(Op.MOUNT, [None, b"cephfs"])
        reply, fds = raw.request_with_fds(Op.SHARED_CACHE)
        assert reply.errno == 0, reply
        result = reply.result
        assert result == {"slots": shared.SLOTS, "slot_size": shared.SLOT_SIZE}
        assert len(fds) == 1
        try:
            with pytest.raises(PermissionError):              # the daemon's table only
                mmap.mmap(fds[0], shared.SIZE)
            view = mmap.mmap(fds[0], shared.SIZE, prot=mmap.PROT_READ)
            view.close()
        finally:
            os.close(fds[0])
        assert raw.call(Op.PING) is None
    # A daemon without client caches grants neither.
    if "--enable-client-cache" not in " ".join(daemon.proc.args):
        with raw_client(daemon.socket_path, both) as raw:
            assert Feature(raw.hello["features"]) & Feature.SHARED_CACHE == 0
