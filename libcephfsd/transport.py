"""Moving frames over a stream socket: the one transport both sides use.

Blocking sockets.  Kept apart from the protocol module so that stays pure,
and shared so the daemon and the client library frame identically.  Each
connection holds only a small read-ahead buffer; a large data section is
received straight into a buffer of its own size.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable

from .protocol import HEADER_SIZE, Message, decode_body, encode, parse_header

#: Read-ahead per connection.  Small on purpose: a daemon holds thousands,
#: and every page of it a connection ever used stays resident.  Requests are
#: tens of bytes; anything larger is read into a buffer of its own size.
READ_AHEAD = 4 << 10


#: How long a receiver polls before sleeping when nothing says otherwise.
SPIN_DEFAULT_US = 100.0


def default_spin_us(cpus: Iterable[int] | None = None) -> float:
    """SPIN_DEFAULT_US for a process that may run on several CPUs (*cpus*,
    default its affinity), else 0.

    A thread polling on the only CPU it may use keeps the peer it waits for
    off that CPU whenever the peer may only run there too (a bench pinned to
    one CPU; a one-CPU container): each poll then lasts its whole budget, or
    until the scheduler preempts it.  Measured with the bench on one CPU and
    the cluster on the other, a client reading 16 MiB files: 0.61 of direct
    libcephfs polling, 0.81 without.
    """
    allowed = os.sched_getaffinity(0) if cpus is None else frozenset(cpus)
    return SPIN_DEFAULT_US if len(allowed) > 1 else 0.0


class SpinPoll:
    """Busy-poll a socket briefly before sleeping in the kernel for a message.

    On the 2-vCPU VMs this runs on, waking a thread that sleeps in recv costs
    tens of microseconds, and the code that runs right after a sleep runs
    several times slower than warm code (measured: a libcephfs stat takes 47
    us after a 0.2 ms sleep, 10 us back to back).  A receiver that expects the
    next message within microseconds (a client waiting for a reply, a daemon
    thread waiting for a busy client's next call) does better polling the
    socket for up to *budget_us* first.

    One object per transport.  A single miss costs nothing more: in a mix of
    fast calls and slow ones (an MDS round trip), the fast calls after a slow
    one should still poll.  Misses in a row make the transport sleep at once
    for the next 1, 3, 7 ... 63 receives, so an idle or slow peer costs at
    most one budget per 64 receives; a poll that finds data resets that.

    *gate* (shared) lets one thread of the process poll at a time, and
    *allowed* (checked while polling) is the owner's condition, for example
    that no other thread of the process needs the GIL, since a polling
    thread keeps taking it back.
    """

    __slots__ = ("budget", "gate", "allowed", "hits", "misses", "stretch", "_streak", "_skip")

    def __init__(self, budget_us: float, gate: threading.Lock,
                 allowed: Callable[[], bool] = lambda: True):
        self.budget = budget_us / 1e6
        self.gate = gate
        self.allowed = allowed
        self.hits = self.misses = 0
        #: Seconds added to the budget while the owner expects a slow answer
        #: (a large read: the daemon's copy alone takes hundreds of us).
        self.stretch = 0.0
        self._streak = self._skip = 0

    def __repr__(self) -> str:
        return (f"<SpinPoll {self.budget * 1e6:.0f}us hits={self.hits} misses={self.misses} "
                f"skip={self._skip}>")

    def poll(self, sock: socket.socket, view: memoryview) -> int:
        """Bytes received into *view* while polling, or -1 if none came (sleep then)."""
        if self._skip:
            self._skip -= 1
            return -1
        allowed = self.allowed
        if not allowed() or not self.gate.acquire(False):
            return -1
        try:
            recv_into, clock = sock.recv_into, time.perf_counter
            deadline = clock() + self.budget + self.stretch
            while True:
                try:
                    n = recv_into(view, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    if clock() < deadline and allowed():
                        continue
                    break
                self.hits += 1
                self._streak = 0
                return n
        finally:
            self.gate.release()
        self.misses += 1
        self._streak = min(self._streak + 1, 7)
        self._skip = (1 << (self._streak - 1)) - 1
        return -1


class ConnectionClosed(Exception):
    """The peer closed the stream (``clean`` is False when it did so mid-frame)."""

    def __init__(self, clean: bool):
        super().__init__("connection closed" + ("" if clean else " in the middle of a frame"))
        self.clean = clean


class SocketTransport:
    """Frames over a connected stream socket.

    ``receive`` and ``send`` may run in different threads, each in one thread
    at a time.  ``max_data_in`` bounds what the peer may send us (raise it
    after the handshake); ``max_data_out`` what we may send.
    """

    __slots__ = ("sock", "max_data_in", "max_data_out", "_buf", "_view", "_start", "_end",
                 "_fds", "before_data", "spin")

    def __init__(self, sock: socket.socket, max_data_in: int, max_data_out: int):
        self.sock = sock
        self.max_data_in = max_data_in
        self.max_data_out = max_data_out
        self._buf = bytearray(READ_AHEAD)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        #: File descriptors received with SCM_RIGHTS, in arrival order; only
        #: collected by receive(want_fds=True).
        self._fds: list[int] | None = None
        #: Called with a frame's data length before its data is read (the
        #: daemon's byte budget: waiting there is the backpressure).
        self.before_data: Any = None
        #: Polls for the start of each message before sleeping, if set.
        self.spin: SpinPoll | None = None

    def __repr__(self) -> str:
        return f"<SocketTransport fd={self.sock.fileno()} buffered={self._end - self._start}>"

    def receive(self) -> Message:
        """The next message.  Raises ConnectionClosed, FrameError, RequestError, OSError."""
        if self._start == self._end:
            self._fill(1, clean_eof=True)
        header = self._read(HEADER_SIZE)
        body_len, data_len = parse_header(header, self.max_data_in)
        body = self._read(body_len)
        if data_len and self.before_data is not None:
            self.before_data(data_len)
        data = self._read(data_len) if data_len else b""
        return decode_body(body, data)

    def receive_with_fds(self) -> tuple[Message, list[int]]:
        """The next message and any descriptors that came with its bytes."""
        self._fds = []
        try:
            message = self.receive()
            return message, self._fds
        finally:
            self._fds = None

    def send(self, message: Message, fds: list[int] | tuple = ()) -> None:
        buffers = encode(message, self.max_data_out)
        if fds:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = self.sock.sendmsg(buffers, rights)
            rest = b"".join(bytes(b) for b in buffers)[sent:]
            if rest:
                self.sock.sendall(rest)
            return
        send_buffers(self.sock, buffers)

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self._view.release()

    def _fill(self, need: int, clean_eof: bool = False) -> None:
        """Read until at least *need* (<= READ_AHEAD) bytes are buffered."""
        if self._start + need > READ_AHEAD:
            # Not enough room behind the buffered bytes: move them to the front.
            pending = self._end - self._start
            self._buf[:pending] = self._buf[self._start:self._end]
            self._start, self._end = 0, pending
        while self._end - self._start < need:
            if self._fds is None:
                n = -1
                if self.spin is not None and self._start == self._end:
                    n = self.spin.poll(self.sock, self._view[self._end:])
                if n < 0:
                    n = self.sock.recv_into(self._view[self._end:])
            else:
                n = self._recv_with_fds()
            if n == 0:
                raise ConnectionClosed(clean_eof and self._end == self._start)
            self._end += n

    def _recv_with_fds(self) -> int:
        space = socket.CMSG_SPACE(16 * array.array("i").itemsize)
        n, ancdata, _flags, _addr = self.sock.recvmsg_into([self._view[self._end:]], space)
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                assert self._fds is not None
                self._fds.extend(fds)
        return n

    def _read(self, n: int) -> bytes | bytearray:
        available = self._end - self._start
        if n <= READ_AHEAD:
            if available < n:
                self._fill(n)
            out = bytes(self._view[self._start:self._start + n])
            self._start += n
            return out
        # Large data section: one buffer of the exact size, filled in place.
        big = bytearray(n)
        big[:available] = self._view[self._start:self._end]
        self._start = self._end = 0
        view = memoryview(big)
        got = available
        while got < n:
            k = self.sock.recv_into(view[got:], n - got, socket.MSG_WAITALL)
            if k == 0:
                raise ConnectionClosed(False)
            got += k
        return big


#: Frames up to this size are first handed to the kernel without letting go
#: of the GIL (send_nowait).  Copying 16 KiB into a socket takes a few
#: microseconds; letting go of the GIL while other threads wait for it costs
#: a hand-off each way, tens of microseconds on small VMs.
NOWAIT_SEND_MAX = 16 << 10

# A ctypes.PyDLL function keeps the GIL during the call (CDLL's let it go).
_libc_send = ctypes.PyDLL(None, use_errno=True).send
_libc_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
_libc_send.restype = ctypes.c_ssize_t
_NOWAIT = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def send_nowait(sock: socket.socket, data: bytes) -> int:
    """Bytes of *data* the kernel takes at once, keeping the GIL; 0 if the
    socket is full.  Raises OSError as socket.send() would (BrokenPipeError...).

    socket.send() lets go of the GIL around every send(2), even one that
    cannot block: in a process whose threads queue for the GIL (the daemon
    under load), each such send costs a hand-off and another to take it back.
    """
    n = _libc_send(sock.fileno(), data, len(data), _NOWAIT)
    if n >= 0:
        return n
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
        return 0
    raise OSError(err, os.strerror(err))


def send_buffers(sock: socket.socket, buffers: list) -> None:
    """Send every byte of *buffers* (a gather list), however the kernel splits it."""
    remaining = sum(len(b) for b in buffers)
    if remaining <= NOWAIT_SEND_MAX:
        frame = b"".join(buffers)
        sent = send_nowait(sock, frame)
        if sent == remaining:
            return
        # The socket is full: wait for room with the GIL let go.
        buffers = [memoryview(frame)[sent:]]
        remaining -= sent
    sent = sock.sendmsg(buffers)
    while sent < remaining:
        remaining -= sent
        # The socket buffer filled: resume mid-list without copying.
        views = []
        for buf in buffers:
            n = len(buf)
            if sent >= n:
                sent -= n
                continue
            views.append(memoryview(buf)[sent:] if sent else buf)
            sent = 0
        buffers = views
        sent = sock.sendmsg(buffers)
