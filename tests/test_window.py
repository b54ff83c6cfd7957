"""Data windows (DATA_WINDOW): large reads and writes through shared memory."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from helpers import Daemon, public_dir, raw_mounted
from libcephfsd import protocol
from libcephfsd.protocol import Feature, Op

MiB = 1 << 20


def test_large_io_goes_through_the_window_and_matches(fs, direct_fs, workdir):
    data = os.urandom(9 * MiB + 12345)           # more than two windows, not aligned
    fd = fs.open(f"{workdir}/big", "w", 0o644)
    assert fs.write(fd, data, 0) == len(data)
    fs.close(fd)
    assert fs._conn.window() is not None          # the write took the window
    fd = direct_fs.open(f"{workdir}/big", "r")
    assert hashlib.sha256(direct_fs.read(fd, 0, len(data) + 10)).digest() == \
        hashlib.sha256(data).digest()
    direct_fs.close(fd)
    fd = fs.open(f"{workdir}/big", "r")
    assert fs.read(fd, 0, len(data) + MiB) == data          # short read at EOF
    assert fs.read(fd, 5 * MiB, 128 << 10) == data[5 * MiB:5 * MiB + (128 << 10)]
    assert fs.read(fd, len(data) + 1, 256 << 10) == b""
    fs.close(fd)


def test_window_io_at_the_file_position(fs, direct_fs, workdir):
    chunk = os.urandom(3 * MiB)
    fd = fs.open(f"{workdir}/pos", "w", 0o644)
    assert fs.write(fd, chunk, -1) == len(chunk)
    assert fs.write(fd, chunk[::-1], -1) == len(chunk)
    fs.close(fd)
    fd = fs.open(f"{workdir}/pos", "r")
    assert fs.read(fd, -1, 2 * MiB) == chunk[:2 * MiB]
    assert fs.read(fd, -1, 5 * MiB) == chunk[2 * MiB:] + chunk[::-1]
    fs.close(fd)


def test_window_errors_are_the_bindings(fs, direct_fs, workdir):
    import libcephfs_proxy
    from libcephfsd.backend import cephfs

    results = []
    for lib, f in ((cephfs, direct_fs), (libcephfs_proxy, fs)):
        fd = f.open(f"{workdir}/wo-{lib.__name__}", "w", 0o644)
        try:
            f.read(fd, 0, 5 * MiB)        # pipelined pieces: the first fails
        except lib.Error as exc:
            results.append((type(exc).__name__, exc.errno, str(exc)))
        f.close(fd)
        fd = f.open(f"{workdir}/wo-{lib.__name__}", "r")
        try:
            f.write(fd, b"x" * MiB, 0)
        except lib.Error as exc:
            results.append((type(exc).__name__, exc.errno, str(exc)))
        f.close(fd)
    assert len(results) == 4 and results[:2] == results[2:], results


def test_inline_when_the_client_opts_out(connect, workdir, monkeypatch):
    monkeypatch.setenv("LIBCEPHFS_PROXY_WINDOW", "0")
    fs = connect()
    data = os.urandom(5 * MiB)
    fd = fs.open(f"{workdir}/inline", "w", 0o644)
    fs.write(fd, data, 0)
    fs.close(fd)
    fd = fs.open(f"{workdir}/inline", "r")
    assert fs.read(fd, 0, len(data)) == data
    fs.close(fd)
    assert Feature.DATA_WINDOW not in fs._conn.hello.features
    assert fs._conn.window() is None



def test_window_bad_input(daemon, ceph_conf, workdir):
    with raw_mounted(daemon.socket_path, ceph_conf, 0) as raw:
        assert raw.request(Op.WINDOW).errno == errno.EPROTO     # not negotiated
    with raw_mounted(daemon.socket_path, ceph_conf, int(Feature.DATA_WINDOW)) as raw:
        assert Feature.DATA_WINDOW in Feature(raw.hello["features"])
        fd = raw.call(Op.OPEN, [f"{workdir}/raw".encode(), os.O_CREAT | os.O_RDWR, 0o644])
        assert raw.request(Op.READ_WINDOW, [fd, 0, 4096, 0]).errno == errno.EPROTO  # no WINDOW
        reply, fds = raw.request_with_fds(Op.WINDOW)
        assert reply.errno == 0, reply
        size = reply.result["size"]
        assert len(fds) == 1 and size == protocol.DEFAULT_MAX_DATA
        for f in fds:
            os.close(f)
        assert raw.request(Op.READ_WINDOW, [fd, 0, size + 1, 0]).errno == errno.EINVAL
        assert raw.request(Op.READ_WINDOW, [fd, 0, 10, size - 9]).errno == errno.EINVAL
        assert raw.request(Op.WRITE_WINDOW, [fd + 1000, 0, 10, 0]).errno == errno.EBADF
        assert raw.request(Op.READ_WINDOW, [fd, 0, "x", 0]).errno == errno.EINVAL
        assert raw.request(Op.READ_WINDOW, [fd, 0, 10]).errno == errno.EINVAL
        # Pipelined: two requests sent before either reply, answered in order.
        assert raw.call(Op.WRITE, [fd, 0], b"a" * 100) == 100
        raw.transport.send(protocol.Request(900, Op.READ_WINDOW, [fd, 0, 60, 0], b""))
        raw.transport.send(protocol.Request(901, Op.READ_WINDOW, [fd, 60, 60, size // 2], b""))
        first, second = raw.receive(), raw.receive()
        assert (first.id, first.result[0]) == (900, 60) and (second.id, second.result[0]) == (901, 40)
        assert raw.call(Op.PING) is None                        # the connection goes on


def test_window_pages_are_freed_past_the_cap(ceph_conf, workdir, monkeypatch):
    """With room for one resident window, the others' pages go after each call,
    and every byte still arrives."""
    import libcephfs_proxy

    d = Daemon(os.path.join(public_dir("libcephfsd-window-"), "d.sock"),
               "--max-io-size", "1M", "--max-inflight-bytes", "2M")
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", d.socket_path)
    clients = []
    try:
        for i in range(3):
            fs = libcephfs_proxy.LibCephFS(conffile=ceph_conf)
            fs.mount(filesystem_name="cephfs")
            clients.append(fs)
        payloads = [os.urandom(3 * MiB + i) for i in range(3)]
        for round_ in range(2):
            for i, fs in enumerate(clients):
                fd = fs.open(f"{workdir}/c{i}", "w", 0o644)
                fs.write(fd, payloads[i], 0)
                fs.close(fd)
            for i, fs in enumerate(clients):
                fd = fs.open(f"{workdir}/c{i}", "r")
                assert fs.read(fd, 0, len(payloads[i])) == payloads[i]
                fs.close(fd)
        windows = d.status()["windows"]
        assert windows["windows"] == 3 and windows["cap"] == MiB
        assert windows["resident"] <= windows["cap"] and windows["released"] > 0
    finally:
        for fs in clients:
            fs.shutdown()
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_close_while_another_thread_uses_the_window(connect, workdir):
    """shutdown() in one thread while another moves data through the window:
    the mover gets DaemonUnavailable (or finishes), never a deadlock or a
    released-buffer error."""
    import threading

    from libcephfs_proxy import DaemonUnavailable

    fs = connect()
    data = os.urandom(8 * MiB)
    fd = fs.open(f"{workdir}/race", os.O_RDWR | os.O_CREAT, 0o644)
    fs.write(fd, data, 0)
    outcomes: list = []

    def mover() -> None:
        try:
            for _ in range(200):
                fs.write(fd, data, 0)
                fs.read(fd, 0, len(data))
            outcomes.append("done")
        except DaemonUnavailable:
            outcomes.append("unavailable")
        except Exception as exc:                    # the failure this test is about
            outcomes.append(exc)

    t = threading.Thread(target=mover)
    t.start()
    fs.read(fd, 0, MiB)
    fs._conn.close()
    t.join(60)
    assert not t.is_alive(), "deadlock between close() and the window's user"
    assert outcomes in (["done"], ["unavailable"]), outcomes
