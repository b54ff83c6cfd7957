"""One client session with libcephfsd over its unix socket.

Thread-safe: calls from several threads are serialised on the connection
(one request in flight, answered in order).  A connection is tied to the
process that opened it: a forked child gets DaemonUnavailable instead of
interleaving frames with its parent on a shared socket.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from libcephfsd import protocol
from libcephfsd.protocol import Event, Feature, Op, Reply, Request, ServerHello
from libcephfsd.transport import ConnectionClosed, SocketTransport

from ._errors import DaemonUnavailable, ProtocolError

DEFAULT_SOCKET = "/run/libcephfsd.sock"


def socket_path() -> str:
    """Where the daemon listens: ``$LIBCEPHFSD_SOCKET``, else /run/libcephfsd.sock."""
    return os.environ.get("LIBCEPHFSD_SOCKET") or DEFAULT_SOCKET


class ErrorReply(Exception):
    """The daemon answered a request with an error (internal: LibCephFS words it)."""

    def __init__(self, errno: int, message: str, from_cephfs: bool):
        super().__init__(errno, message)
        self.errno = errno
        self.message = message
        self.from_cephfs = from_cephfs


class Connection:
    def __init__(self, path: str | None = None, features: Feature = protocol.SUPPORTED_FEATURES):
        self.path = path or socket_path()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._next_id = 1
        self._broken: str | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(
                f"no libcephfsd answers on {self.path}: {exc.strerror or exc} "
                "(is the daemon running? set LIBCEPHFSD_SOCKET to its socket)") from exc
        self._transport = SocketTransport(sock, max_data_in=0, max_data_out=0)
        try:
            result, _ = self.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION,
                                             int(features)])
            self.hello = ServerHello.from_wire(result)
        except (ErrorReply, protocol.RemoteProtocolError) as exc:
            self.close()
            raise ProtocolError(f"libcephfsd at {self.path} refused the handshake: {exc}") from exc
        self._transport.max_data_in = self.hello.max_data
        self._transport.max_data_out = self.hello.max_data

    def __repr__(self) -> str:
        state = f"broken: {self._broken}" if self._broken else "open"
        session = getattr(self, "hello", None)
        return f"<Connection {self.path} session={session.session if session else '?'} {state}>"

    @property
    def max_data(self) -> int:
        return self.hello.max_data

    def call(self, op: Op, args: list | tuple = (), data: bytes | bytearray | memoryview = b""
             ) -> tuple[Any, Any]:
        """Send one request, return (result, data) of its reply.

        Raises ErrorReply for an error reply, DaemonUnavailable when the
        daemon is gone, ProtocolError on nonsense.
        """
        with self._lock:
            broken = self._broken
            if broken is not None:
                raise DaemonUnavailable(broken)
            if os.getpid() != self._pid:
                raise DaemonUnavailable(
                    "this libcephfs_proxy connection belongs to the parent process; "
                    "a forked child must create its own LibCephFS")
            rid = self._next_id
            self._next_id = rid + 1 if rid < 0xFFFFFFFF else 1
            try:
                self._transport.send(Request(rid, op, list(args), data))
                reply = self._transport.receive()
            except (ConnectionClosed, OSError) as exc:
                raise DaemonUnavailable(
                    self._break(f"connection to libcephfsd at {self.path} lost: {exc}")) from exc
            except protocol.ProtocolError as exc:
                raise ProtocolError(
                    self._break(f"protocol error from libcephfsd at {self.path}: {exc}")) from exc
            if isinstance(reply, Event):
                detail = reply.payload[1] if isinstance(reply.payload, list) and len(
                    reply.payload) == 2 else reply.payload
                raise DaemonUnavailable(
                    self._break(f"libcephfsd at {self.path} closed the connection: {detail}"))
            if not isinstance(reply, Reply) or reply.id != rid:
                raise ProtocolError(
                    self._break(f"libcephfsd at {self.path} answered out of order: {reply!r}"))
        if reply.errno:
            result = reply.result
            if isinstance(result, list) and len(result) == 2:
                raise ErrorReply(reply.errno, str(result[0]),
                                 result[1] == protocol.ErrorSource.CEPHFS)
            raise ErrorReply(reply.errno, str(result), False)
        return reply.result, reply.data

    def _break(self, reason: str) -> str:
        """Mark the connection unusable for *reason*, which it returns."""
        self._broken = reason
        try:
            self._transport.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return reason

    def close(self) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = "connection closed"
            self._transport.close()
