"""The pure protocol core: framing, messages, limits, argument schemas."""

from __future__ import annotations

import errno
import re
import socket
import struct
import threading
from pathlib import Path

import msgpack
import pytest

from libcephfsd import protocol
from libcephfsd.protocol import (
    ARGS, Event, EventKind, Feature, FrameDecoder, FrameError, LocalProtocolError, Op, Reply,
    Request, RequestError, ServerHello, decode_body, encode, encode_bytes, parse_header)
from libcephfsd.transport import (NOWAIT_SEND_MAX, ConnectionClosed, SocketTransport,
                                  send_buffers, send_nowait)

REPO = Path(__file__).resolve().parents[2]


def frame(body: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">II", len(body), len(data)) + body + data


@pytest.mark.parametrize("message", [
    Request(1, Op.STAT, [b"/a", True]),
    Request(0xFFFFFFFF, Op.WRITE, [3, 0], b"x" * 1000),
    Reply(7, 0, {"k": [1, 2, b"v"]}),
    Reply(7, errno.ENOENT, ["gone", protocol.ErrorSource.CEPHFS]),
    Reply(9, 0, 5, b"payload"),
    Event(EventKind.GOODBYE, [errno.EPROTO, "bye"]),
])
def test_messages_round_trip_through_the_decoder(message):
    decoder = FrameDecoder()
    wire = encode_bytes(message)
    # Byte by byte: a decoder must cope with any split of the stream.
    out = []
    for i in range(len(wire)):
        decoder.feed(wire[i:i + 1])
        while (m := decoder.next_message()) is not None:
            out.append(m)
    assert len(out) == 1
    got = out[0]
    assert type(got) is type(message)
    for field in message.__dataclass_fields__:
        assert getattr(got, field) == getattr(message, field), field


def test_several_messages_in_one_feed():
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_bytes(Request(i, Op.PING)) for i in range(1, 6)))
    ids = []
    while (m := decoder.next_message()) is not None:
        ids.append(m.id)
    assert ids == [1, 2, 3, 4, 5]


def test_data_travels_outside_msgpack():
    buffers = encode(Request(1, Op.WRITE, [3, 0], b"abc"))
    assert buffers[-1] == b"abc"
    body_len, data_len = struct.unpack(">II", buffers[0][:8])
    assert data_len == 3 and len(buffers[0]) == 8 + body_len


def test_oversized_body_is_a_frame_error():
    with pytest.raises(FrameError) as info:
        parse_header(struct.pack(">II", protocol.MAX_BODY + 1, 0), max_data=0)
    assert info.value.errno == errno.EMSGSIZE


def test_empty_body_is_a_frame_error():
    with pytest.raises(FrameError):
        parse_header(struct.pack(">II", 0, 0), max_data=0)


def test_data_over_the_limit_is_a_frame_error_and_the_decoder_stays_broken():
    decoder = FrameDecoder(max_data=10)
    decoder.feed(frame(msgpack.packb([0, 1, 2, []]), b"x" * 11))
    with pytest.raises(FrameError):
        decoder.next_message()
    with pytest.raises(FrameError):
        decoder.next_message()


@pytest.mark.parametrize("body", [
    b"\xc1",                                  # never-used msgpack byte
    msgpack.packb({"a": 1}),                  # not an array
    msgpack.packb([]),                        # empty
    msgpack.packb([9, 1, 2, []]),             # unknown message type
    msgpack.packb([0, -1, 2, []]),            # negative id
    msgpack.packb([0, 2 ** 33, 2, []]),       # id beyond u32
    msgpack.packb([0, "1", 2, []]),           # id not an int
    msgpack.packb([1, 1, -5, None]),          # negative errno in a reply
    msgpack.packb([0, 1, 2]),                 # request too short
])
def test_malformed_bodies_are_frame_errors(body):
    with pytest.raises(FrameError):
        decode_body(body)


@pytest.mark.parametrize("body", [
    msgpack.packb([0, 5, "STAT", []]),        # op not an int
    msgpack.packb([0, 5, 40, {"a": 1}]),      # args not an array
])
def test_bad_requests_with_a_usable_id_are_request_errors(body):
    with pytest.raises(RequestError) as info:
        decode_body(body)
    assert info.value.request_id == 5


def test_local_errors_for_invalid_messages():
    with pytest.raises(LocalProtocolError):
        Request(-1, Op.PING)
    with pytest.raises(LocalProtocolError):
        encode(Request(1, Op.WRITE, [1, 0], b"x" * 11), max_data=10)
    with pytest.raises(LocalProtocolError):
        encode(Request(1, Op.STAT, [object()]))
    with pytest.raises(LocalProtocolError):
        encode(Reply(1, 0, b"x" * (protocol.MAX_BODY + 1)))


def test_check_args_normalises_and_rejects():
    op, args = protocol.check_args(Op.STAT, ["/a", True])
    assert op is Op.STAT and args == [b"/a", True]
    with pytest.raises(RequestError) as info:
        protocol.check_args(999, [])
    assert info.value.errno == errno.EOPNOTSUPP
    for bad in ([b"/a"], [b"/a", 1], [1, True], [b"", True], [b"a\0b", True],
                [b"x" * (protocol.PATH_MAX + 1), True]):
        with pytest.raises(RequestError) as info:
            protocol.check_args(Op.STAT, bad)
        assert info.value.errno == errno.EINVAL
    with pytest.raises(RequestError):
        protocol.check_args(Op.READ, [3, 0, -1])
    with pytest.raises(RequestError):
        protocol.check_args(Op.CLOSE, [2 ** 64])
    with pytest.raises(RequestError):
        protocol.check_args(Op.SETATTRX, [b"/a", {"bogus": 1}, 0, 0])
    assert protocol.check_args(Op.SETATTRX, [b"/a", {"mtime": 1.5, "mode": 0o644}, 9, 0])[1][1] \
        == {"mtime": 1.5, "mode": 0o644}


def test_every_op_but_hello_has_a_schema_or_takes_nothing():
    for op in Op:
        kinds = ARGS.get(op, ())
        assert all(callable(k) for k in kinds), op


def test_hello_negotiation():
    assert protocol.check_hello([protocol.MAGIC, protocol.PROTOCOL_VERSION, 0xFF]) \
        == (protocol.SUPPORTED_FEATURES, {})
    assert protocol.check_hello([protocol.MAGIC, protocol.PROTOCOL_VERSION, 1,
                                 {"cache_entries": 10}]) == (Feature.CLIENT_CACHE,
                                                             {"cache_entries": 10})
    for options in ({"cache_entries": "10"}, [1], {"cache_entries": True}):
        with pytest.raises(RequestError):
            protocol.check_hello([protocol.MAGIC, protocol.PROTOCOL_VERSION, 1, options])
    with pytest.raises(RequestError) as info:
        protocol.check_hello([protocol.MAGIC, 99, 0])
    assert info.value.errno == errno.EPROTONOSUPPORT
    with pytest.raises(RequestError):
        protocol.check_hello(["nope", protocol.PROTOCOL_VERSION, 0])
    hello = ServerHello(1, Feature(0), protocol.MAX_BODY, 1 << 20, 3, "x", (16, 2, 15))
    assert ServerHello.from_wire(hello.to_wire()) == hello
    cached = ServerHello(1, Feature.CLIENT_CACHE, protocol.MAX_BODY, 1 << 20, 3, "x",
                         (16, 2, 15), {"entries": 5, "ttl": 1.0})
    assert ServerHello.from_wire(cached.to_wire()) == cached
    with pytest.raises(protocol.RemoteProtocolError):
        ServerHello.from_wire({**hello.to_wire(), "max_data": 0})


def _md_table(heading: str) -> dict[str, int]:
    """name -> number from the table under *heading* in protocol.md."""
    text = (REPO / "protocol.md").read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return {m.group(2): int(m.group(1), 0)
            for m in re.finditer(r"^\|\s*(0x[0-9a-fA-F]+|\d+)\s*\|\s*`?([A-Z_]+)`?\s*\|",
                                 section, re.M)}


def test_protocol_md_op_table_matches_the_enum():
    assert _md_table("### Op codes") == {op.name: op.value for op in Op}


def test_protocol_md_feature_and_event_tables_match():
    assert _md_table("### Feature bits") == {f.name: f.value for f in Feature}
    assert _md_table("### Event kinds") == {k.name: k.value for k in EventKind}
    assert _md_table("### Message types") == {t.name: t.value for t in protocol.MsgType}


def test_protocol_md_states_the_limits():
    text = (REPO / "protocol.md").read_text()
    for name in ("MAX_BODY", "DATA_CEILING", "DEFAULT_MAX_DATA", "PATH_MAX", "MAX_XATTR",
                 "READDIR_MAX_BATCH", "OPEN_READ_MAX"):
        value = getattr(protocol, name)
        assert re.search(rf"`{name}`\s*\|\s*{value}\b", text), f"{name} = {value} not in protocol.md"


# -- transport over a real socketpair (no daemon) -------------------------------


def test_transport_carries_large_data_and_many_small_messages():
    a, b = socket.socketpair()
    big = bytes(range(256)) * (40000)  # ~10 MiB: larger than any read-ahead
    ta = SocketTransport(a, protocol.DATA_CEILING, protocol.DATA_CEILING)
    tb = SocketTransport(b, protocol.DATA_CEILING, protocol.DATA_CEILING)
    sender = threading.Thread(target=lambda: [
        ta.send(Request(i, Op.WRITE, [1, 0], big if i == 3 else b"s%d" % i)) for i in range(1, 6)])
    sender.start()
    got = [tb.receive() for _ in range(5)]
    sender.join()
    assert [m.id for m in got] == [1, 2, 3, 4, 5]
    assert bytes(got[2].data) == big and got[3].data == b"s4"
    ta.close()
    with pytest.raises(ConnectionClosed) as info:
        tb.receive()
    assert info.value.clean
    tb.close()


def test_transport_reports_a_stream_cut_mid_frame():
    a, b = socket.socketpair()
    wire = encode_bytes(Request(1, Op.PING))
    a.sendall(wire[:-2])
    a.close()
    tb = SocketTransport(b, 0, 0)
    with pytest.raises(ConnectionClosed) as info:
        tb.receive()
    assert not info.value.clean
    tb.close()


def _reader(sock: socket.socket, want: int, into: bytearray) -> threading.Thread:
    """A started thread receiving from *sock* into *into* until *want* bytes came."""
    def read_all() -> None:
        while len(into) < want:
            piece = sock.recv(65536)
            if not piece:
                return
            into.extend(piece)

    reader = threading.Thread(target=read_all)
    reader.start()
    return reader


def test_send_buffers_survives_partial_sends():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunks = [b"a" * 100_000, b"b" * 300_000, b"c" * 7]
    received = bytearray()
    reader = _reader(b, sum(map(len, chunks)), received)
    send_buffers(a, chunks)
    reader.join(10)
    a.close()
    b.close()
    assert bytes(received) == b"".join(chunks)


def _fill(sock: socket.socket) -> int:
    """Fill *sock*'s send buffer; the bytes it took."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return total


def test_send_nowait_takes_what_fits_and_never_blocks():
    a, b = socket.socketpair()
    assert send_nowait(a, b"hello") == 5
    assert b.recv(5) == b"hello"
    queued = _fill(a)
    assert send_nowait(a, b"more") == 0          # full: nothing taken, no wait
    b.close()
    with pytest.raises(BrokenPipeError):         # as socket.send() would raise
        send_nowait(a, b"gone")
    a.close()
    assert queued > 0


def test_small_frames_wait_for_room_when_the_socket_is_full():
    a, b = socket.socketpair()
    queued = _fill(a)
    frames = [[b"%05d" % i, b"y" * (NOWAIT_SEND_MAX // 2)] for i in range(40)]
    received = bytearray()
    reader = _reader(b, queued + sum(len(p) for f in frames for p in f), received)
    for frame in frames:
        send_buffers(a, frame)
    reader.join(10)
    a.close()
    b.close()
    assert bytes(received[queued:]) == b"".join(p for f in frames for p in f)


def test_a_frame_the_kernel_took_in_part_is_finished_in_order(monkeypatch):
    # On a unix socket a small frame is taken whole or not at all; the
    # resumption after a partial send is checked with a send that takes half.
    from libcephfsd import transport

    def half(sock: socket.socket, data: bytes) -> int:
        return sock.send(data[:len(data) // 2])

    monkeypatch.setattr(transport, "send_nowait", half)
    a, b = socket.socketpair()
    send_buffers(a, [b"head-", b"0123456789", b"-tail"])
    a.close()
    assert b.recv(100) == b"head-0123456789-tail"
    b.close()
