"""Garbage on the wire: a clear error or a closed connection, for that client only.

Every test here keeps a well-behaved client mounted on the same daemon and
checks, after the abuse, that it still works and that the daemon lives.
"""

from __future__ import annotations

import errno
import struct

import msgpack
import pytest

from helpers import RawClient, wait_for
from libcephfsd import protocol
from libcephfsd.protocol import Event, EventKind, Op, Reply


@pytest.fixture
def bystander(fs):
    """A mounted, working client that must not notice anything."""
    fs.stat("/")
    yield fs
    assert fs.stat("/").st_ino == 1


@pytest.fixture
def raw(proxy_env):
    with RawClient(proxy_env.socket_path) as client:
        yield client
    assert proxy_env.alive()


def frame(body: bytes, data: bytes = b"", body_len: int | None = None,
          data_len: int | None = None) -> bytes:
    return struct.pack(">II", len(body) if body_len is None else body_len,
                       len(data) if data_len is None else data_len) + body + data


def expect_goodbye(client: RawClient, err: int) -> None:
    message = client.receive()
    assert isinstance(message, Event) and message.kind == EventKind.GOODBYE, message
    assert message.payload[0] == err
    with pytest.raises(Exception):
        client.receive()


def error_of(reply) -> tuple[int, str]:
    assert isinstance(reply, Reply) and reply.errno, reply
    message, source = reply.result
    assert source == protocol.ErrorSource.DAEMON
    return reply.errno, message


@pytest.mark.parametrize("garbage,err", [
    (frame(b"\xc1"), errno.EPROTO),                                   # invalid msgpack
    (frame(msgpack.packb({"op": 1})), errno.EPROTO),                  # not an array
    (frame(msgpack.packb([7, 1, 2, []])), errno.EPROTO),              # unknown message type
    (frame(msgpack.packb([0, -3, 2, []])), errno.EPROTO),             # bad request id
    (frame(msgpack.packb([1, 1, 0, None])), errno.EPROTO),            # a reply sent to the daemon
    (frame(b"", body_len=0), errno.EMSGSIZE),                         # empty body
    (frame(b"", body_len=protocol.MAX_BODY + 1), errno.EMSGSIZE),     # oversized body
    (frame(msgpack.packb([0, 1, 2, []]), data_len=protocol.DATA_CEILING + 1), errno.EMSGSIZE),
])
def test_broken_frames_close_only_that_connection(raw, bystander, garbage, err):
    raw.send_raw(garbage)
    expect_goodbye(raw, err)


def test_data_before_the_handshake_is_a_frame_error(proxy_env, bystander):
    with RawClient(proxy_env.socket_path, hello=False) as raw:
        raw.send_raw(frame(msgpack.packb([0, 1, Op.PING, []]), b"xyz"))
        expect_goodbye(raw, errno.EMSGSIZE)


def test_requests_before_the_handshake_are_refused(proxy_env, bystander):
    with RawClient(proxy_env.socket_path, hello=False) as raw:
        err, message = error_of(raw.request(Op.STAT, [b"/", True]))
        assert err == errno.EPROTO and "HELLO" in message
        reply = raw.request(Op.HELLO, [protocol.MAGIC, 99, 0])
        assert error_of(reply)[0] == errno.EPROTONOSUPPORT
        raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, 0])
        assert error_of(raw.request(Op.HELLO, [protocol.MAGIC, 1, 0]))[0] == errno.EPROTO
        assert raw.call(Op.PING) is None


@pytest.mark.parametrize("op,args,err", [
    (9999, [], errno.EOPNOTSUPP),                          # unknown op
    (Op.STAT, [], errno.EINVAL),                           # too few arguments
    (Op.STAT, [b"/", True, 3], errno.EINVAL),              # too many
    (Op.STAT, [42, True], errno.EINVAL),                   # wrong kind
    (Op.STAT, [b"", True], errno.EINVAL),                  # empty path
    (Op.STAT, [b"/a\x00b", True], errno.EINVAL),           # NUL in path
    (Op.READ, [3, 0, -5], errno.EINVAL),                   # negative length
    (Op.CLOSE, [1 << 63], errno.EINVAL),                   # beyond int64
    (Op.SETATTRX, [b"/", {"evil": 1}, 1, 0], errno.EINVAL),
    (Op.CONF_PARSE_ARGV, [[1, 2]], errno.EINVAL),
    (Op.STAT, [b"/", True], errno.ENOTCONN),               # not mounted yet
    (Op.MOUNT, [None, None], errno.ENOTCONN),              # mount before create
    (Op.CONF_SET, [b"a", b"b"], errno.ENOTCONN),           # configure before create
])
def test_bad_requests_get_an_error_and_the_connection_goes_on(raw, bystander, op, args, err):
    assert error_of(raw.request(op, args))[0] == err
    assert raw.call(Op.PING) is None


def test_bogus_fds_and_handles_touch_nothing(raw, bystander, ceph_conf, workdir, direct_fs):
    raw.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        raw.call(Op.CONF_READ_FILE, ["ceph.conf", f.read()])
    raw.call(Op.MOUNT, [None, b"cephfs"])
    # The bystander's fds are real fds of the same shared mount: still refused.
    fd = bystander.open(f"{workdir}/victim", "w", 0o644)
    for op, args in ((Op.READ, [fd, 0, 10]), (Op.WRITE, [fd, 0]), (Op.CLOSE, [fd]),
                     (Op.FSTAT, [fd]), (Op.FCHMOD, [fd, 0o777]), (Op.CLOSE, [-1]),
                     (Op.READDIR, [1, 10]), (Op.CLOSEDIR, [77]), (Op.SEEKDIR, [5, 0])):
        reply = raw.request(op, args, b"overwrite" if op == Op.WRITE else b"")
        assert reply.errno == errno.EBADF, (op, reply)
    bystander.write(fd, b"intact", 0)
    bystander.close(fd)
    assert direct_fs.stat(f"{workdir}/victim").st_mode & 0o777 == 0o644


def test_io_above_max_data_is_refused(raw, bystander, ceph_conf, workdir):
    raw.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        raw.call(Op.CONF_READ_FILE, ["ceph.conf", f.read()])
    raw.call(Op.MOUNT, [None, b"cephfs"])
    fd = raw.call(Op.OPEN, [f"{workdir}/f".encode(), 0o102, 0o644])
    max_data = raw.hello["max_data"]
    assert error_of(raw.request(Op.READ, [fd, 0, max_data + 1]))[0] == errno.EINVAL
    assert error_of(raw.request(Op.PREADV, [fd, [max_data, 1], 0]))[0] == errno.EINVAL
    assert error_of(raw.request(Op.PWRITEV, [fd, [5, 5], 0], b"short"))[0] == errno.EINVAL
    assert raw.call(Op.WRITE, [fd, 0], b"fine") == 4


def test_pipelined_requests_are_answered_in_order(raw, bystander):
    ids = []
    for i in range(50):
        raw.transport.send(protocol.Request(1000 + i, Op.PING if i % 3 else 9999, []))
        ids.append(1000 + i)
    replies = [raw.receive() for _ in ids]
    assert [r.id for r in replies] == ids
    assert [bool(r.errno) for r in replies] == [i % 3 == 0 for i in range(50)]


def test_a_client_vanishing_mid_frame_is_cleaned_up(proxy_env, bystander):
    before = proxy_env.status()["totals"]["sessions"]
    raw = RawClient(proxy_env.socket_path)
    raw.send_raw(frame(msgpack.packb([0, 1, Op.WRITE, [3, 0]]), data_len=1000)
                 + b"only part of the data")
    raw.close()
    wait_for(lambda: proxy_env.status()["totals"]["sessions"] == before,
             what="the half-sent session to be cleaned up")


def test_many_abusive_connections_do_not_harm_the_daemon(proxy_env, bystander):
    for i in range(200):
        with RawClient(proxy_env.socket_path, hello=i % 2 == 0) as raw:
            raw.send_raw(frame(b"\xc1" * (i % 7 + 1)))
            expect_goodbye(raw, errno.EPROTO)
    assert proxy_env.alive()


@pytest.mark.parametrize("op,args", [
    # Each of these aborts (ceph_assert) or hangs libcephfs 16.2.15 if it gets
    # there as is: the daemon must neither die nor stall.
    (Op.MKDIR, [b"//", 0o755]),
    (Op.UNLINK, [b"//", ]),
    (Op.RENAME, [b"//", b"/q-never"]),
    (Op.RMDIR, [b"////"]),
    (Op.MKDIR, [b"///libcephfsd-slashes", 0o755]),
    (Op.SYMLINK, [b"", b"/libcephfsd-empty-target"]),
    (Op.SYMLINK, [b"\x00abc", b"/libcephfsd-nul-target"]),
    # mknod of a directory kills the Pacific MDS itself (for every client).
    (Op.MKNOD, [b"/libcephfsd-mknod-dir", 0o40755, 0]),
    (Op.MKNOD, [b"/libcephfsd-mknod-link", 0o120777, 0]),
])
def test_inputs_that_would_crash_libcephfs_are_answered(raw, bystander, ceph_conf, direct_fs,
                                                         op, args):
    raw.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        raw.call(Op.CONF_READ_FILE, ["ceph.conf", f.read()])
    raw.call(Op.MOUNT, [None, b"cephfs"])
    reply = raw.request(op, args)
    assert isinstance(reply, Reply)
    if op == Op.MKDIR and args[0].strip(b"/"):
        assert reply.errno == 0          # '///x' is '/x'
        direct_fs.rmdir(b"/libcephfsd-slashes")
    else:
        assert reply.errno in (errno.EEXIST, errno.EISDIR, errno.EBUSY, errno.ENOENT,
                               errno.ENOTEMPTY, errno.EINVAL), reply
    assert raw.call(Op.PING) is None
    assert direct_fs.stat("/").st_ino == 1     # the cluster's MDS lives too


def mount_raw(raw: RawClient, ceph_conf: str) -> None:
    raw.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        raw.call(Op.CONF_READ_FILE, ["ceph.conf", f.read()])
    raw.call(Op.MOUNT, [None, b"cephfs"])


def test_listdir_needs_its_feature_and_keeps_a_handle_only_when_unfinished(
        proxy_env, bystander, ceph_conf, workdir, direct_fs):
    for i in range(12):
        direct_fs.close(direct_fs.open(f"{workdir}/e{i:02d}", "w", 0o644))
    path = workdir.encode()
    with RawClient(proxy_env.socket_path) as raw:             # asked for no feature
        mount_raw(raw, ceph_conf)
        assert raw.request(Op.LISTDIR, [path, 100]).errno == errno.EPROTO
    with RawClient(proxy_env.socket_path, hello=False) as raw:
        raw.hello = raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION,
                                        int(protocol.Feature.LISTDIR)])
        mount_raw(raw, ceph_conf)
        assert raw.request(Op.LISTDIR, [path, -1]).errno == errno.EINVAL
        assert raw.request(Op.LISTDIR, [path + b"/nope", 10]).errno == errno.ENOENT
        assert raw.request(Op.LISTDIR, [path + b"/e00", 10]).errno == errno.ENOTDIR
        # Read to the end: nothing stays open in the daemon.
        handle, _, entries, eof = raw.call(Op.LISTDIR, [path, 100])
        assert (handle, len(entries), eof) == (0, 14, True)
        assert raw.request(Op.READDIR, [0, 10]).errno == errno.EBADF
        # Unfinished: an open handle that goes on where the answer stopped.
        handle, _, entries, eof = raw.call(Op.LISTDIR, [path, 5])
        assert handle > 0 and len(entries) == 5 and not eof
        rest, eof = raw.call(Op.READDIR, [handle, 100])
        assert eof and sorted(e[4] for e in entries + rest) == sorted(
            [b".", b".."] + [f"e{i:02d}".encode() for i in range(12)])
        raw.call(Op.CLOSEDIR, [handle])
        assert raw.request(Op.CLOSEDIR, [handle]).errno == errno.EBADF
        assert raw.call(Op.PING) is None


def test_open_read_needs_its_feature_and_only_opens_to_read(
        proxy_env, bystander, ceph_conf, workdir, direct_fs):
    import os

    def make(name: str, data: bytes) -> bytes:
        fd = direct_fs.open(f"{workdir}/{name}", "w", 0o644)
        direct_fs.write(fd, data, 0)
        direct_fs.close(fd)
        return f"{workdir}/{name}".encode()

    small, big = make("small", b"tiny file"), make("big", b"b" * (protocol.OPEN_READ_MAX + 1))
    with RawClient(proxy_env.socket_path) as raw:             # asked for no feature
        mount_raw(raw, ceph_conf)
        assert raw.request(Op.OPEN_READ, [small, os.O_RDONLY, 0, 4096]).errno == errno.EPROTO
    with RawClient(proxy_env.socket_path, hello=False) as raw:
        wanted = protocol.Feature.CLIENT_CACHE | protocol.Feature.OPEN_READ
        raw.hello = raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, int(wanted)])
        mount_raw(raw, ceph_conf)
        if protocol.Feature(raw.hello["features"]) & wanted != wanted:
            # A daemon without the client cache grants neither.
            assert raw.request(Op.OPEN_READ, [small, os.O_RDONLY, 0, 4096]).errno == errno.EPROTO
            return
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_CREAT):
            assert raw.request(Op.OPEN_READ, [small, flags, 0o644, 4096]).errno == errno.EINVAL
        assert raw.request(Op.OPEN_READ, [small, os.O_RDONLY, 0, -1]).errno == errno.EINVAL
        assert raw.request(Op.OPEN_READ, [small + b"x", os.O_RDONLY, 0, 9]).errno == errno.ENOENT
        opened = []
        for path, flags, readahead, whole, data in (
                (small, os.O_RDONLY, 4096, True, b"tiny file"),
                (small, os.O_RDONLY, 9, True, b"tiny file"),
                (small, os.O_RDONLY, 8, False, b""),                  # larger than asked
                (big, os.O_RDONLY, 1 << 40, False, b""),              # larger than the cap
                (workdir.encode(), os.O_RDONLY | os.O_DIRECTORY, 4096, False, b"")):
            reply = raw.request(Op.OPEN_READ, [path, flags, 0, readahead])
            assert reply.errno == 0, reply
            fd, st, got_whole = reply.result
            assert (got_whole, bytes(reply.data)) == (whole, data), path
            assert st[1] == direct_fs.stat(path).st_ino and reply.meta is not None
            opened.append(fd)
        for fd in opened:
            raw.call(Op.CLOSE, [fd])
        assert raw.request(Op.CLOSE, [opened[0]]).errno == errno.EBADF
