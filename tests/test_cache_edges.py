"""The cache's edges: changes from other CephFS clients, clients that stop
reading, garbage on the cache channel, and bounds."""

from __future__ import annotations

import mmap
import os
import socket
import threading
import time

import pytest

import libcephfs_proxy as proxy
from helpers import Clock, Daemon, RawClient, public_dir, wait_for
from libcephfsd import protocol
from libcephfsd.backend import cephfs
from libcephfsd.coherence import EPOCH, SENT, CacheTracker, Notifier
from libcephfsd.protocol import Event, EventKind, Feature, Op, Reply, ServerHello
from libcephfsd.transport import SocketTransport


def start(*extra: str) -> Daemon:
    return Daemon(os.path.join(public_dir("libcephfsd-edges-"), "d.sock"),
                  "--enable-client-cache", *extra)


def client(daemon: Daemon, conf: str, monkeypatch) -> proxy.LibCephFS:
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", daemon.socket_path)
    fs = proxy.LibCephFS(conffile=conf)
    fs.mount(filesystem_name="cephfs")
    return fs


def write(fs, path: str, data: bytes) -> None:
    fd = fs.open(path, "w", 0o644)
    fs.write(fd, data, 0)
    fs.fsync(fd, 0)
    fs.close(fd)


# -- changes made elsewhere ------------------------------------------------------------


@pytest.fixture(scope="module")
def long_ttl_daemon(ceph_conf):
    d = start("--cache-ttl", "30")
    yield d
    assert d.stop() == 0, d.log()


@pytest.mark.parametrize("writer", ["independent libcephfs client", "second libcephfsd"])
def test_remote_data_writes_arrive_through_libcephfs_callbacks(
        writer, long_ttl_daemon, ceph_conf, direct_fs, workdir, monkeypatch, request):
    """With a 30 s TTL, only libcephfs's ino_cb can make the new size visible at once."""
    path = f"{workdir}/data"
    write(direct_fs, path, b"12345")
    fs = client(long_ttl_daemon, ceph_conf, monkeypatch)
    fd = fs.open(path, "r")
    assert fs.read(fd, 0, 100) == b"12345"   # the daemon's mount now caches the data
    fs.close(fd)
    assert fs.stat(path).st_size == 5
    assert fs.stat(path).st_size == 5 and fs._conn.cache.stats.hits >= 1
    if writer == "independent libcephfs client":
        other = cephfs.LibCephFS(conffile=ceph_conf)
        other.mount(filesystem_name="cephfs")
        write(other, path, b"remote data, longer")
        other.shutdown()
    else:
        second = start()
        request.addfinalizer(second.stop)
        other = client(second, ceph_conf, monkeypatch)
        write(other, path, b"remote data, longer")
        other.shutdown()
    wait_for(lambda: fs.stat(path).st_size == 19, timeout=5,
             what="the remote write to reach the cache (30 s TTL: only a callback can)")
    status = long_ttl_daemon.status()
    assert sum(f["callbacks"] for f in status["cache"]["filesystems"]) >= 1
    fs.shutdown()


def test_remote_metadata_changes_are_bounded_by_the_ttl(ceph_conf, direct_fs, workdir,
                                                        monkeypatch, request):
    d = start("--cache-ttl", "1")
    request.addfinalizer(d.stop)
    path = f"{workdir}/meta"
    write(direct_fs, path, b"x")
    fs = client(d, ceph_conf, monkeypatch)
    assert fs.stat(path).st_mode & 0o777 == 0o644
    direct_fs.chmod(path, 0o600)               # another client: no callback for this
    changed_at = time.monotonic()
    wait_for(lambda: fs.stat(path).st_mode & 0o777 == 0o600, timeout=3, interval=0.01,
             what="the remote chmod to show")
    assert time.monotonic() - changed_at <= 1.0 + 0.3, "staleness beyond the TTL"
    fs.shutdown()


# -- clients that do not read ---------------------------------------------------------------


def test_a_client_that_stops_reading_does_not_stall_changes(ceph_conf, direct_fs, workdir,
                                                            monkeypatch, request):
    d = start("--cache-ttl", "30")
    request.addfinalizer(d.stop)
    files = [f"{workdir}/s{i}" for i in range(40)]
    for path in files:
        write(direct_fs, path, b"s")
    # The stuck client: caches answers for many files, then sends a flood of
    # requests and never reads again.
    stuck = RawClient(d.socket_path, hello=False)
    stuck.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, int(Feature.CLIENT_CACHE)])
    stuck.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        stuck.call(Op.CONF_READ_FILE, ["ceph.conf", f.read()])
    stuck.call(Op.MOUNT, [None, b"cephfs"])
    for path in files:
        assert stuck.request(Op.STAT, [path.encode(), True]).meta is not None
    flood = protocol.encode_bytes(protocol.Request(9, Op.STAT, [files[0].encode(), True]))
    stuck.sock.settimeout(0.5)
    try:
        for _ in range(20000):
            stuck.sock.sendall(flood)
    except (TimeoutError, BlockingIOError):
        pass                                     # its own requests back up: fine
    fs = client(d, ceph_conf, monkeypatch)
    t0 = time.monotonic()
    for round_ in range(30):
        for path in files:
            fs.truncate(path, round_ + 2)
    per_change = (time.monotonic() - t0) / (30 * len(files))
    assert per_change < 0.05, f"changes stalled: {per_change * 1000:.1f} ms each"
    session = next(s for s in d.status()["sessions"] if s["cache"] and s["cache"]["timed_out"])
    assert session["cache"]["epoch"] >= 1       # its whole cache was declared invalid
    stuck.close()
    fs.shutdown()


# -- garbage on the cache channel ----------------------------------------------------------


def test_a_client_sending_invalidations_is_cut_off(proxy_env, fs):
    with RawClient(proxy_env.socket_path) as raw:
        raw.transport.send(Event(EventKind.INVALIDATE, [1, [2, b"x"]]))
        goodbye = raw.receive()
        assert isinstance(goodbye, Event) and goodbye.kind == EventKind.GOODBYE
    assert fs.stat("/").st_ino == 1


class FakeDaemon:
    """Speaks just enough of the protocol, over a socketpair, to feed a real
    client library connection whatever the test wants."""

    def __init__(self, monkeypatch, tmp_path):
        self.path = str(tmp_path / "fake.sock")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.memfd = os.memfd_create("fake-page")
        os.ftruncate(self.memfd, 4096)
        self.map = mmap.mmap(self.memfd, 4096)
        self.page = memoryview(self.map).cast("Q")
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        monkeypatch.setenv("LIBCEPHFSD_SOCKET", self.path)

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        self.transport = SocketTransport(sock, protocol.DATA_CEILING, protocol.DATA_CEILING)
        hello = self.transport.receive()
        reply = ServerHello(1, Feature.CLIENT_CACHE, protocol.MAX_BODY, 1 << 20, 1, "fake",
                            (16, 2, 15), {"entries": 8, "ttl": 1.0}).to_wire()
        self.transport.send(Reply(hello.id, 0, reply), [self.memfd])
        self.accepted.set()

    def answer_next(self, result, meta=None) -> None:
        request = self.transport.receive()
        self.transport.send(Reply(request.id, 0, result, b"", meta))

    def close(self) -> None:
        self.page.release()
        self.map.close()
        os.close(self.memfd)
        self.listener.close()


@pytest.mark.parametrize("payload", [
    ["not a dep"], [[1, 2, 3]], [["x", b"y"]], "garbage", [[1, "str name"]]])
def test_a_malformed_invalidation_breaks_the_connection_and_drops_the_cache(
        payload, monkeypatch, tmp_path):
    from libcephfs_proxy._connection import Connection
    fake = FakeDaemon(monkeypatch, tmp_path)
    conn = Connection(cache_entries=8)
    assert fake.accepted.wait(10) and conn.cache is not None
    stat_wire = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    threading.Thread(target=fake.answer_next,
                     args=(stat_wire, [time.monotonic() + 60, [5, [1, b"f"]]])).start()
    assert conn.fetch(Op.STAT, (b"/f", True), "key", list) == stat_wire
    assert conn.lookup("key") == stat_wire
    # Garbage arrives and is announced in the shared page.
    fake.transport.sock.sendall(protocol.encode_bytes(
        Event(EventKind.INVALIDATE, payload)))
    fake.page[SENT] += 1
    with pytest.raises(proxy.DaemonUnavailable):
        conn.lookup("key")
    assert len(conn.cache) == 0
    assert conn.lookup("key") is proxy.cache.MISS      # and the next call fails:
    with pytest.raises(proxy.DaemonUnavailable):
        conn.fetch(Op.STAT, (b"/f", True), "key", list)
    conn.close()
    fake.transport.close()
    fake.close()


def test_an_epoch_change_drops_the_whole_cache(monkeypatch, tmp_path):
    from libcephfs_proxy._connection import Connection
    fake = FakeDaemon(monkeypatch, tmp_path)
    conn = Connection(cache_entries=8)
    assert fake.accepted.wait(10)
    threading.Thread(target=fake.answer_next,
                     args=("v", [time.monotonic() + 60, [5]])).start()
    conn.fetch(Op.STAT, (b"/f", True), "key", str)
    assert conn.lookup("key") == "v"
    fake.page[EPOCH] += 1
    assert conn.lookup("key") is proxy.cache.MISS
    assert conn.cache.stats.flushes == 1
    conn.close()
    fake.transport.close()
    fake.close()


# -- the daemon's bookkeeping, with an injected clock -------------------------------------


@pytest.fixture
def notifiers():
    made, socks = [], []

    def make(sid: int, max_deps: int = 1000) -> Notifier:
        a, b = socket.socketpair()
        socks.extend((a, b))
        n = Notifier(a, threading.Lock(), sid, max_deps)
        n.peer = b  # type: ignore[attr-defined]
        made.append(n)
        return n

    yield make
    for n in made:
        n.close()
    for s in socks:
        s.close()


def read_events(n: Notifier) -> list:
    n.peer.setblocking(False)
    t = SocketTransport(n.peer, 0, 0)
    out = []
    try:
        while True:
            out.append(t.receive().payload)
    except (BlockingIOError, Exception):
        return out


def test_tracker_notifies_exactly_the_sessions_caching_a_dep(notifiers):
    clock = Clock(100.0)
    tracker = CacheTracker("fs", ttl=1.0, max_records=1000, timer=clock)
    a, b, c = notifiers(1), notifiers(2), notifiers(3)
    assert tracker.register(a, [10, (10, b"x")], tracker.begin()) == 101.0
    assert tracker.register(b, [10], tracker.begin()) == 101.0
    assert tracker.register(c, [20], tracker.begin()) == 101.0
    assert tracker.invalidate([10]) == 2
    assert read_events(a) == [[10]] and read_events(b) == [[10]] and read_events(c) == []
    assert (a.page[SENT], b.page[SENT], c.page[SENT]) == (1, 1, 0)
    assert tracker.invalidate([10]) == 0      # registrations are consumed
    clock.now = 102.0                          # c's entry has expired: no event needed
    assert tracker.invalidate([20]) == 0


def test_tracker_refuses_a_fill_that_raced_with_a_change(notifiers):
    tracker = CacheTracker("fs", ttl=1.0, max_records=1000, timer=Clock(100.0))
    a = notifiers(1)
    seq0 = tracker.begin()
    tracker.invalidate([(7, b"name")])         # the change lands while a reads
    assert tracker.register(a, [(7, b"name"), 7], seq0) is None
    assert tracker.register(a, [8], seq0) is not None   # other deps are fine
    seq1 = tracker.begin()
    tracker.blind()
    assert tracker.register(a, [9], seq1) is None


def test_tracker_bounds_per_session_and_per_filesystem(notifiers):
    clock = Clock(100.0)
    tracker = CacheTracker("fs", ttl=1.0, max_records=25, timer=clock)
    a, b = notifiers(1, max_deps=10), notifiers(2)
    assert tracker.register(a, list(range(10)), tracker.begin()) is not None
    assert tracker.register(a, [100], tracker.begin()) is None      # a's bound
    assert tracker.register(b, list(range(200, 215)), tracker.begin()) is not None
    assert tracker.register(b, [300], tracker.begin()) is None      # filesystem bound
    clock.now = 200.0                                               # all expired
    assert tracker.register(b, [300], tracker.begin()) is not None  # pruned, then fine
    assert tracker.stats()["records"] == 1 and tracker.stats()["refused_fills"] == 2


def test_tracker_tolerates_a_session_closing_during_delivery(notifiers):
    tracker = CacheTracker("fs", ttl=10.0, max_records=100, timer=Clock(100.0))
    a, b = notifiers(1), notifiers(2)
    tracker.register(a, [1], tracker.begin())
    tracker.register(b, [1], tracker.begin())
    with a.send_lock:
        a.close()                  # as Session.close() does, racing the change below
    assert tracker.invalidate([1]) == 2
    assert read_events(b) == [[1]]
    tracker.flush_all()            # must not touch a's released page either


def test_tracker_declares_a_full_socket_invalid(notifiers):
    tracker = CacheTracker("fs", ttl=10.0, max_records=10 ** 6, timer=Clock(100.0))
    a = notifiers(1)
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    for i in range(5000):
        tracker.register(a, [i], tracker.begin())
        tracker.invalidate([i])
        if a.page[EPOCH]:
            break
        sent += 1
    assert a.page[EPOCH] == 1 and a.timed_out == 1
    assert a.page[SENT] == sent
    assert tracker.stats()["records"] == 0


# -- tools/cachestat ------------------------------------------------------------------------


def cachestat(daemon: Daemon, *args: str) -> str:
    import subprocess
    import sys
    from helpers import REPO
    out = subprocess.run([sys.executable, str(REPO / "tools" / "cachestat"), "--socket",
                          daemon.socket_path, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cachestat_reports_clients_and_daemon(long_ttl_daemon, ceph_conf, direct_fs, workdir,
                                              monkeypatch):
    import json
    path = f"{workdir}/watched"
    write(direct_fs, path, b"abc")
    fs = client(long_ttl_daemon, ceph_conf, monkeypatch)
    for _ in range(300):
        fs.stat(path)
    fs.truncate(path, 1)          # an invalidation, and a round trip that publishes stats
    report = json.loads(cachestat(long_ttl_daemon, "--json"))
    mine = next(c for c in report["clients"] if c["pid"] == os.getpid())
    assert mine["hits"] >= 299 and mine["misses"] >= 1 and mine["applied"] >= 1
    assert report["daemon"]["invalidations_sent"] >= 1
    assert report["daemon"]["shared_tables"] >= 1 and report["daemon"]["shared_fills"] >= 1
    text = cachestat(long_ttl_daemon)
    assert "RATIO" in text and f"{os.getpid()}" in text and "invalidations sent" in text
    assert "mount tables" in text
    lines = cachestat(long_ttl_daemon, "--json", "0.2", "2").splitlines()
    assert len(lines) == 2 and {"hits", "misses", "ratio", "sent"} <= json.loads(lines[0]).keys()
    header = cachestat(long_ttl_daemon, "0.1", "1").splitlines()[0]
    assert "HITS/s" in header and "DELIV_MAX" in header
    fs.shutdown()
