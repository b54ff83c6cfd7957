"""Read buffers (READ_BUFFERS): large reads land where the application gets them."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import threading

import pytest
from helpers import Daemon, RawClient, public_dir, raw_mounted, wait_for

from libcephfsd import protocol
from libcephfsd.protocol import Feature, Op

MiB = 1 << 20


def _buffer_of(fs, obj):
    """The read buffer whose object *obj* is, or None."""
    return next((b for b in fs._conn._buffers if b.holds(obj)), None)


def _write(direct_fs, path: str, data: bytes) -> None:
    fd = direct_fs.open(path, "w", 0o644)
    assert direct_fs.write(fd, data, 0) == len(data)
    direct_fs.close(fd)


def test_large_reads_return_the_buffers_object_reused_when_free(fs, direct_fs, workdir):
    data = os.urandom(12 * MiB)
    _write(direct_fs, f"{workdir}/big", data)
    fd = fs.open(f"{workdir}/big", "r")
    first = fs.read(fd, 0, 4 * MiB)
    assert type(first) is bytes and first == data[:4 * MiB]
    buffer = _buffer_of(fs, first)
    assert buffer is not None, "a 4 MiB read should land in a read buffer"
    where = id(first)
    del first
    for off in (4 * MiB, 8 * MiB, 0):
        got = fs.read(fd, off, 4 * MiB)
        assert got == data[off:off + 4 * MiB]
        assert id(got) == where                 # the free buffer was read into again
        assert hash(got) == hash(bytes(bytearray(got)))     # no stale cached hash
        del got
    assert len(fs._conn._buffers) == 1
    fs.close(fd)


def test_a_result_still_held_never_changes(fs, direct_fs, workdir):
    data = os.urandom(16 * MiB)
    _write(direct_fs, f"{workdir}/held", data)
    fd = fs.open(f"{workdir}/held", "r")
    held = [fs.read(fd, i * 2 * MiB, 2 * MiB) for i in range(8)]
    hashes = [hash(h) for h in held]
    for _ in range(3):                          # more reads while all are held
        assert fs.read(fd, 14 * MiB, 2 * MiB) == data[14 * MiB:]
    for i, h in enumerate(held):
        assert h == data[i * 2 * MiB:(i + 1) * 2 * MiB], f"result {i} changed"
        assert hash(h) == hashes[i]
    in_buffers = [h for h in held if _buffer_of(fs, h) is not None]
    assert 1 <= len(in_buffers) <= 2            # at most 2 per connection; the rest copied
    # Once one is dropped its buffer serves the next read, and the others stay.
    dropped = id(in_buffers[0])
    index = [id(h) for h in held].index(dropped)
    del in_buffers, held[index]
    got = fs.read(fd, 0, 2 * MiB)
    assert id(got) == dropped and got == data[:2 * MiB]
    parts = [i for i in range(8) if i != index]
    for i, h in zip(parts, held):
        assert h == data[i * 2 * MiB:(i + 1) * 2 * MiB], f"result {i} changed"
    fs.close(fd)


def test_short_reads_and_the_file_position(fs, direct_fs, workdir):
    import libcephfs_proxy

    data = os.urandom(3 * MiB + 100)
    _write(direct_fs, f"{workdir}/short", data)
    fd = fs.open(f"{workdir}/short", "r")
    tail = fs.read(fd, 3 * MiB, 2 * MiB)         # 100 bytes: copied out
    assert tail == data[3 * MiB:] and _buffer_of(fs, tail) is None
    most = fs.read(fd, MiB, 4 * MiB)             # 2 MiB + 100: stays in the buffer
    assert most == data[MiB:] and _buffer_of(fs, most) is not None
    assert fs.read(fd, len(data), 2 * MiB) == b""
    assert fs.read(fd, -1, 2 * MiB) == data[:2 * MiB]       # at the file position
    assert fs.read(fd, -1, 2 * MiB) == data[2 * MiB:]
    fs.close(fd)
    with pytest.raises(libcephfs_proxy.Error) as exc:
        fs.read(fd, 0, 2 * MiB)                  # closed fd: the binding's error
    assert exc.value.errno == errno.EBADF


def test_threads_sharing_a_connection_each_get_their_data(fs, direct_fs, workdir):
    data = os.urandom(8 * MiB)
    _write(direct_fs, f"{workdir}/threads", data)
    fd = fs.open(f"{workdir}/threads", "r")
    errors: list = []

    def reader(k: int) -> None:
        kept = []
        for i in range(20):
            off = ((k + i) % 7) * MiB
            got = fs.read(fd, off, MiB + k)
            if got != data[off:off + MiB + k]:
                errors.append((k, i))
            kept.append((off, got))
            if len(kept) > 2:
                off0, old = kept.pop(0)
                if old != data[off0:off0 + MiB + k]:
                    errors.append((k, i, "changed"))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    fs.close(fd)


def test_a_forked_child_keeps_what_it_had(fs, direct_fs, workdir):
    """The child shares the buffers' pages: the parent must never read into
    one the child may still hold."""
    one, two = os.urandom(4 * MiB), os.urandom(4 * MiB)
    _write(direct_fs, f"{workdir}/fork", one + two)
    fd = fs.open(f"{workdir}/fork", "r")
    held = fs.read(fd, 0, 4 * MiB)
    assert _buffer_of(fs, held) is not None
    expect = hashlib.sha256(one).digest()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: wait, then check
        os.close(go_w)
        os.read(go_r, 1)
        os._exit(0 if hashlib.sha256(held).digest() == expect else 1)
    os.close(go_r)
    try:
        del held                                 # the parent's last reference
        for _ in range(3):
            assert fs.read(fd, 4 * MiB, 4 * MiB) == two
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the parent overwrote the child's bytes"
    fs.close(fd)


def test_a_result_outlives_its_connection(connect, direct_fs, workdir):
    from libcephfs_proxy import _readbuf

    data = os.urandom(2 * MiB)
    _write(direct_fs, f"{workdir}/outlive", data)
    fs = connect()
    fd = fs.open(f"{workdir}/outlive", "r")
    kept = fs.read(fd, 0, len(data))
    assert _buffer_of(fs, kept) is not None
    fs.close(fd)
    fs.shutdown()
    assert kept == data                          # still mapped after the connection went
    mine = [b for b in _readbuf._orphans if b.holds(kept)]
    assert len(mine) == 1
    del kept
    other = connect()                            # its first buffer sweeps the orphans
    fd = other.open(f"{workdir}/outlive", "r")
    assert other.read(fd, 0, len(data)) == data
    other.close(fd)
    assert mine[0] not in _readbuf._orphans


def test_opting_out_on_either_side(connect, direct_fs, workdir, monkeypatch, ceph_conf):
    import libcephfs_proxy

    data = os.urandom(3 * MiB)
    _write(direct_fs, f"{workdir}/optout", data)
    monkeypatch.setenv("LIBCEPHFS_PROXY_READ_BUFFERS", "0")
    fs = connect()
    assert Feature.READ_BUFFERS not in fs._conn.hello.features
    fd = fs.open(f"{workdir}/optout", "r")
    assert fs.read(fd, 0, len(data)) == data and not fs._conn._buffers
    fs.close(fd)
    monkeypatch.delenv("LIBCEPHFS_PROXY_READ_BUFFERS")
    d = Daemon(os.path.join(public_dir("libcephfsd-rb-"), "d.sock"), "--max-read-buffers", "0")
    try:
        monkeypatch.setenv("LIBCEPHFSD_SOCKET", d.socket_path)
        fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf)
        fs.mount(filesystem_name="cephfs")
        try:
            assert Feature.READ_BUFFERS not in fs._conn.hello.features
            fd = fs.open(f"{workdir}/optout", "r")
            assert fs.read(fd, 0, len(data)) == data and not fs._conn._buffers
            fs.close(fd)
        finally:
            fs.shutdown()
    finally:
        assert d.stop() == 0


def test_the_daemons_cap_refuses_and_the_session_frees(ceph_conf, direct_fs, workdir,
                                                      monkeypatch):
    """Past --max-read-buffers reads go through the window; a closed session
    gives its buffers' bytes back."""
    import libcephfs_proxy

    data = os.urandom(4 * MiB)
    _write(direct_fs, f"{workdir}/cap", data)
    d = Daemon(os.path.join(public_dir("libcephfsd-rb-"), "d.sock"), "--max-read-buffers", "5M")
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", d.socket_path)
    clients = []
    try:
        for _ in range(2):
            fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf)
            fs.mount(filesystem_name="cephfs")
            clients.append(fs)
        results = []
        for fs in clients:
            fd = fs.open(f"{workdir}/cap", "r")
            results.append(fs.read(fd, 0, len(data)))
            fs.close(fd)
        assert results == [data, data]
        assert [_buffer_of(fs, r) is not None for fs, r in zip(clients, results)] == [True, False]
        status = d.status()["read_buffers"]
        assert status["buffers"] == 1 and 4 * MiB < status["bytes"] <= status["cap"] == 5 * MiB
        assert status["refused"] == 1
        for _ in range(3):                      # refused: it does not ask again at once
            fd = clients[1].open(f"{workdir}/cap", "r")
            assert clients[1].read(fd, 0, len(data)) == data
            clients[1].close(fd)
        assert d.status()["read_buffers"]["refused"] == 1
        clients.pop(0).shutdown()
        wait_for(lambda: d.status()["read_buffers"]["bytes"] == 0,
                 what="the session's buffers freed")
    finally:
        for fs in clients:
            fs.shutdown()
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_copying_writes_a_read_result_from_its_buffer(fs, direct_fs, workdir, monkeypatch):
    data = os.urandom(9 * MiB + 7)
    _write(direct_fs, f"{workdir}/src", data)
    windowed = []
    real = fs._conn.write_window
    monkeypatch.setattr(fs._conn, "write_window",
                        lambda *a: windowed.append(len(a[2])) or real(*a))
    src = fs.open(f"{workdir}/src", "r")
    dst = fs.open(f"{workdir}/dst", "w", 0o644)
    for off in range(0, len(data), 4 * MiB):
        piece = fs.read(src, off, 4 * MiB)
        assert _buffer_of(fs, piece) is not None or len(piece) < MiB // 2
        assert fs.write(dst, piece, off) == len(piece)
    assert fs.write(dst, bytes(8 * MiB), len(data)) == 8 * MiB     # not a result: window
    fs.close(src)
    fs.close(dst)
    assert windowed == [8 * MiB]                 # only the plain bytes went through it
    fd = direct_fs.open(f"{workdir}/dst", "r")
    assert hashlib.sha256(direct_fs.read(fd, 0, len(data))).digest() == \
        hashlib.sha256(data).digest()
    assert direct_fs.read(fd, len(data), MiB) == bytes(MiB)
    direct_fs.close(fd)


def test_reads_longer_than_max_data_fill_one_buffer_in_pieces(ceph_conf, direct_fs, workdir,
                                                              monkeypatch):
    import libcephfs_proxy

    data = os.urandom(5 * MiB + 3)
    _write(direct_fs, f"{workdir}/pieces", data)
    d = Daemon(os.path.join(public_dir("libcephfsd-rb-"), "d.sock"), "--max-io-size", "1M")
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", d.socket_path)
    try:
        fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf)
        fs.mount(filesystem_name="cephfs")
        try:
            fd = fs.open(f"{workdir}/pieces", "r")
            whole = fs.read(fd, 0, len(data))
            assert whole == data and _buffer_of(fs, whole) is not None
            del whole
            tail = fs.read(fd, 3 * MiB, 4 * MiB)            # ends at EOF, in the 3rd piece
            assert tail == data[3 * MiB:] and _buffer_of(fs, tail) is not None
            del tail
            assert fs.read(fd, -1, 3 * MiB) == data[:3 * MiB]      # at the file position
            assert fs.read(fd, -1, 3 * MiB) == data[3 * MiB:]
            assert fs.read(fd, -1, 3 * MiB) == b""
            fs.close(fd)
        finally:
            fs.shutdown()
        wait_for(lambda: d.status()["read_buffers"]["buffers"] == 0,
                 what="the session's buffers freed")
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def _buffer(raw: RawClient, size: int) -> tuple[dict, int]:
    reply, fds = raw.request_with_fds(Op.BUFFER, [size])
    if reply.errno:
        assert not fds
        return reply, -1
    assert len(fds) == 1
    return reply.result, fds[0]


def test_read_buffer_bad_input(daemon, ceph_conf, workdir):
    with raw_mounted(daemon.socket_path, ceph_conf, 0) as raw:
        assert raw.request(Op.BUFFER, [MiB]).errno == errno.EPROTO     # not negotiated
    with RawClient(daemon.socket_path, hello=False) as raw:
        raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION,
                            int(Feature.READ_BUFFERS)])
        assert raw.request(Op.BUFFER, [MiB]).errno != 0                 # not mounted
    with raw_mounted(daemon.socket_path, ceph_conf, int(Feature.READ_BUFFERS)) as raw:
        assert Feature.READ_BUFFERS in Feature(raw.hello["features"])
        fd = raw.call(Op.OPEN, [f"{workdir}/raw".encode(), os.O_CREAT | os.O_RDWR, 0o644])
        assert raw.call(Op.WRITE, [fd, 0], b"0123456789" * 10) == 100
        assert _buffer(raw, 0)[0].errno == errno.EINVAL
        assert _buffer(raw, protocol.DATA_CEILING + 1)[0].errno == errno.EINVAL
        result, memfd = _buffer(raw, 10000)
        try:
            assert result["size"] == 3 * mmap.PAGESIZE and result["id"] > 0
            seals = fcntl.fcntl(memfd, fcntl.F_GET_SEALS)
            assert seals & (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL) == \
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            with pytest.raises(PermissionError):
                os.ftruncate(memfd, 0)                   # cannot be shrunk under a read
            bid = result["id"]
            assert raw.call(Op.READ_BUFFER, [fd, 10, 50, bid, 7]) == 50
            view = mmap.mmap(memfd, result["size"])
            assert view[7:57] == (b"0123456789" * 10)[10:60]
            view.close()
        finally:
            os.close(memfd)
        size = result["size"]
        # WRITE_BUFFER writes the buffer's bytes, here those READ_BUFFER put there.
        assert raw.call(Op.WRITE_BUFFER, [fd, 200, 50, bid, 7]) == 50
        back = raw.request(Op.READ, [fd, 200, 100])
        assert back.errno == 0 and bytes(back.data) == (b"0123456789" * 10)[10:60]
        for op in (Op.READ_BUFFER, Op.WRITE_BUFFER):
            assert raw.request(op, [fd, 0, 10, bid + 100, 0]).errno == errno.EINVAL
            assert raw.request(op, [fd, 0, 11, bid, size - 10]).errno == errno.EINVAL
            assert raw.request(op, [fd + 1000, 0, 10, bid, 0]).errno == errno.EBADF
        assert raw.request(Op.READ_BUFFER, [fd, 0, 10, bid + 100, 0]).errno == errno.EINVAL
        assert raw.request(Op.READ_BUFFER, [fd, 0, 11, bid, size - 10]).errno == errno.EINVAL
        assert raw.request(Op.READ_BUFFER, [fd + 1000, 0, 10, bid, 0]).errno == errno.EBADF
        assert raw.request(Op.READ_BUFFER, [fd, 0, "x", bid, 0]).errno == errno.EINVAL
        assert raw.request(Op.READ_BUFFER, [fd, 0, 10, bid]).errno == errno.EINVAL
        result, memfd = _buffer(raw, 2 * protocol.DEFAULT_MAX_DATA)
        os.close(memfd)
        for op in (Op.READ_BUFFER, Op.WRITE_BUFFER):                    # over max_data
            assert raw.request(op, [fd, 0, protocol.DEFAULT_MAX_DATA + 1, result["id"],
                                    0]).errno == errno.EINVAL
        assert raw.call(Op.FREE_BUFFER, [result["id"]]) is None
        assert raw.request(Op.FREE_BUFFER, [bid + 100]).errno == errno.EINVAL
        assert raw.call(Op.FREE_BUFFER, [bid]) is None
        assert raw.request(Op.READ_BUFFER, [fd, 0, 10, bid, 0]).errno == errno.EINVAL
        memfds, ids = [], []
        daemon_fds = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        try:
            for _ in range(8):
                result, memfd = _buffer(raw, 4096)
                assert memfd >= 0, result
                memfds.append(memfd)
                ids.append(result["id"])
            assert _buffer(raw, 4096)[0].errno == errno.ENOBUFS        # 8 per session
        finally:
            for memfd in memfds:
                os.close(memfd)
            memfds.clear()
        for small in ids:
            assert raw.call(Op.FREE_BUFFER, [small]) is None
        try:
            # A quarter of the daemon's cap (32 x max_data) per session.
            quarter = 8 * protocol.DEFAULT_MAX_DATA
            result, memfd = _buffer(raw, quarter // 2)
            memfds.append(memfd)
            assert _buffer(raw, quarter // 2 + 4096)[0].errno == errno.ENOBUFS
            result, memfd = _buffer(raw, quarter // 2)
            memfds.append(memfd)
            # The daemon keeps the mappings, not the descriptors (it closes
            # one after its reply is sent: one more round trip to be sure).
            assert raw.call(Op.PING) is None
            assert len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) <= daemon_fds
        finally:
            for memfd in memfds:
                os.close(memfd)
        assert raw.call(Op.PING) is None                               # the connection goes on
    assert daemon.alive()
