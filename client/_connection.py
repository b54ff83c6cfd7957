"""One client session with libcephfsd over its unix socket.

Thread-safe: calls from several threads are serialised on the connection
(one request in flight, answered in order).  A connection is tied to the
process that opened it: a forked child gets DaemonUnavailable instead of
interleaving frames with its parent on a shared socket.

With the daemon's CLIENT_CACHE feature the connection also owns the
session's :class:`MetadataCache`: INVALIDATE events arrive on the same
socket, and a page shared with the daemon counts the events sent.  A cache
lookup first compares that count with the events applied (a memory read, no
system call); only when events are pending does it take the connection lock
to apply them.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import socket
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping

from libcephfsd import protocol
from libcephfsd import shared as _shared
from libcephfsd.coherence import CLIENT_STATS_AT, EPOCH, PAGE_SIZE, SENT, dep_from_wire
from libcephfsd.protocol import Event, EventKind, Feature, Op, Reply, Request, ServerHello
from libcephfsd.transport import ConnectionClosed, SocketTransport, SpinPoll, default_spin_us

from . import _readbuf
from ._errors import DaemonUnavailable, ProtocolError
from ._types import FileData, cache_weight
from .cache import MISS, MetadataCache

DEFAULT_SOCKET = "/run/libcephfsd.sock"
log = logging.getLogger("libcephfs_proxy")
#: Publish cache statistics to the shared page every this many lookups.
_PUBLISH_EVERY = 256


_CONNECTIONS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The socket and the shared page belong to the parent: a child that read
    # from either would steal its replies and invalidations.
    for conn in list(_CONNECTIONS):
        conn._broken = ("this libcephfs_proxy connection belongs to the parent process; "
                        "a forked child must create its own LibCephFS")
        conn._page = None
        conn.cache = None
        _after_fork_in_parent()


def _after_fork_in_parent() -> None:
    # The child shares the read buffers' pages: a bytes object it inherited
    # must never change, so no buffer is read into again.
    for conn in list(_CONNECTIONS):
        for buffer in conn._buffers:
            buffer.forked = True


os.register_at_fork(after_in_child=_after_fork_in_child,
                    after_in_parent=_after_fork_in_parent)


def cache_settings() -> int | None:
    """Entries the client cache may hold, from the environment; None: no cache.

    ``LIBCEPHFS_PROXY_CACHE=0`` (or ``off``, ``no``) opts out;
    ``LIBCEPHFS_PROXY_CACHE_ENTRIES`` sizes it (the daemon may grant fewer).
    """
    if os.environ.get("LIBCEPHFS_PROXY_CACHE", "1").strip().lower() in ("0", "off", "no",
                                                                          "false"):
        return None
    try:
        entries = int(os.environ.get("LIBCEPHFS_PROXY_CACHE_ENTRIES", "4096"))
    except ValueError:
        entries = 4096
    return max(1, entries)


def spin_budget_us(environ: Mapping[str, str] = os.environ,
                   cpus: Iterable[int] | None = None) -> float:
    """How long a call polls for its reply before sleeping: $LIBCEPHFS_PROXY_SPIN_US
    microseconds (0: never).  Unset, empty or not a number: 100 for a process
    that may run on several CPUs (*cpus*, default its affinity), 0 for one
    pinned to a single CPU, where polling would keep the daemon off the CPU
    it may share (see default_spin_us).  Only a single-threaded process polls."""
    try:
        return max(0.0, min(float(environ["LIBCEPHFS_PROXY_SPIN_US"]), 10000.0))
    except (KeyError, ValueError):
        return default_spin_us(cpus)


# PyBytes_FromStringAndSize(NULL, n): n bytes to fill before anyone else sees
# them (the binding's read does the same), so a read costs one allocation.
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_new_bytes.restype = ctypes.py_object
_bytes_address = ctypes.pythonapi.PyBytes_AsString
_bytes_address.argtypes = [ctypes.py_object]
_bytes_address.restype = ctypes.c_void_p


def _window_wanted() -> bool:
    """$LIBCEPHFS_PROXY_WINDOW=0 keeps large I/O inline (no shared window)."""
    return os.environ.get("LIBCEPHFS_PROXY_WINDOW", "1").strip().lower() not in (
        "0", "off", "no", "false")


#: While waiting for a large read, poll this much longer per byte asked for
#: (a copy at 8 GB/s, slower than measured here), at most _SPIN_STRETCH_MAX s.
_SPIN_PER_BYTE = 1 / 8e9
_SPIN_STRETCH_MAX = 0.002


def open_readahead() -> int:
    """Bytes of a small file's content a read-only open brings with it (the
    daemon caps it at 64 KiB): $LIBCEPHFS_PROXY_OPEN_READAHEAD, default
    65536; 0 turns OPEN_READ off."""
    try:
        value = int(os.environ.get("LIBCEPHFS_PROXY_OPEN_READAHEAD", str(protocol.OPEN_READ_MAX)))
    except ValueError:
        value = protocol.OPEN_READ_MAX
    return max(0, min(value, protocol.OPEN_READ_MAX))


def _shared_wanted() -> bool:
    """$LIBCEPHFS_PROXY_SHARED_CACHE=0 keeps a client to its own cache."""
    return os.environ.get("LIBCEPHFS_PROXY_SHARED_CACHE", "1").strip().lower() not in (
        "0", "off", "no", "false")


def _single_threaded() -> bool:
    # A polling thread keeps retaking the GIL from the process's other threads.
    return threading.active_count() == 1


#: One polling thread per process.
_SPIN_GATE = threading.Lock()


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
    def __init__(self, path: str | None = None, cache_entries: int | None = None):
        self.path = path or socket_path()
        self._lock = threading.Lock()
        self._next_id = 1
        self._broken: str | None = None
        #: The session's cache, when the daemon granted one.
        self.cache: MetadataCache | None = None
        self._page: memoryview | None = None
        self._map: mmap.mmap | None = None
        #: The data window: None until asked for, False if refused.
        self._window: memoryview | None | bool = None
        self._window_map: mmap.mmap | None = None
        self._window_anchor: Any = None
        self._window_address = 0
        #: Held from filling the window to emptying it, across calls; also
        #: guards the read buffers.
        self.window_lock = threading.Lock()
        self._buffers: list[_readbuf.ReadBuffer] = []
        #: The mount's shared answers (SHARED_CACHE): None until asked for
        #: (after mount), False if refused.
        self._shared: _shared.SharedView | None | bool = None
        #: After the daemon refused a read buffer, none is asked for until then.
        self._buffers_refused_until = 0.0
        self._applied = 0
        self._epoch = 0
        self._lookups = 0
        #: Deps invalidated while a call was waiting for its reply.
        self._invalidated_in_call: set | None = None
        #: Ids of requests sent with post(): their replies are read and
        #: dropped, in order, before anything else.
        self._posted: deque[int] = deque()
        _CONNECTIONS.add(self)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(
                f"no libcephfsd answers on {self.path}: {exc.strerror or exc} "
                "(is the daemon running? set LIBCEPHFSD_SOCKET to its socket)") from exc
        self._transport = SocketTransport(sock, max_data_in=protocol.HANDSHAKE_MAX_DATA,
                                          max_data_out=protocol.HANDSHAKE_MAX_DATA)
        try:
            self.hello = self._handshake(cache_entries)
        except (ErrorReply, protocol.RemoteProtocolError, OSError, ValueError) as exc:
            self.close()
            if isinstance(exc, DaemonUnavailable):
                raise
            raise ProtocolError(f"libcephfsd at {self.path} refused the handshake: {exc}") from exc
        self._transport.max_data_in = self.hello.max_data
        self._transport.max_data_out = self.hello.max_data
        spin = spin_budget_us()
        if spin > 0:
            self._transport.spin = SpinPoll(spin, _SPIN_GATE, _single_threaded)

    def _handshake(self, cache_entries: int | None) -> ServerHello:
        features = Feature.CLIENT_CACHE if cache_entries else Feature(0)
        if _window_wanted():
            features |= Feature.DATA_WINDOW
        features |= Feature.LISTDIR
        if _window_wanted() and _readbuf.supported() and _readbuf.budget():
            features |= Feature.READ_BUFFERS
        if cache_entries and _shared_wanted():
            features |= Feature.SHARED_CACHE
        #: Bytes of content a read-only open asks for (OPEN_READ), read once.
        self.readahead = open_readahead() if cache_entries else 0
        if self.readahead:
            features |= Feature.OPEN_READ
        request = protocol.hello_request(1, features, {"cache_entries": cache_entries}
                                         if cache_entries else None)
        self._transport.send(request)
        try:
            reply, fds = self._transport.receive_with_fds()
        except ConnectionClosed as exc:
            raise DaemonUnavailable(f"libcephfsd at {self.path} closed the connection "
                                    "during the handshake") from exc
        try:
            if not isinstance(reply, Reply) or reply.id != 1:
                raise ProtocolError(f"unexpected answer to HELLO: {reply!r}")
            if reply.errno:
                raise ErrorReply(reply.errno, str(reply.result), False)
            hello = ServerHello.from_wire(reply.result)
            if Feature.CLIENT_CACHE in hello.features:
                if len(fds) != 1 or not hello.cache:
                    raise ProtocolError("CLIENT_CACHE granted without its shared page")
                self._map = mmap.mmap(fds[0], PAGE_SIZE)
                self._page = memoryview(self._map).cast("Q")
                self._epoch = self._page[EPOCH]
                self.cache = MetadataCache(int(hello.cache["entries"]), weigh=cache_weight)
            return hello
        finally:
            for fd in fds:
                os.close(fd)

    def __repr__(self) -> str:
        state = f"broken: {self._broken}" if self._broken else "open"
        session = getattr(self, "hello", None)
        return f"<Connection {self.path} session={session.session if session else '?'} {state}>"

    @property
    def max_data(self) -> int:
        return self.hello.max_data

    @property
    def open_read_granted(self) -> bool:
        """Whether read-only opens go as OPEN_READ (granted with the cache)."""
        return Feature.OPEN_READ in self.hello.features and self.cache is not None

    @property
    def listdir(self) -> bool:
        """Whether the daemon answers LISTDIR."""
        return Feature.LISTDIR in self.hello.features

    def call(self, op: Op, args: list | tuple = (), data: bytes | bytearray | memoryview = b""
             ) -> tuple[Any, Any]:
        """Send one request, return (result, data) of its reply.

        Raises ErrorReply for an error reply, DaemonUnavailable when the
        daemon is gone, ProtocolError on nonsense.
        """
        with self._lock:
            reply = self._exchange(op, args, data)
        if reply.errno:
            raise _error_reply(reply)
        return reply.result, reply.data

    def post(self, op: Op, args: list | tuple = ()) -> None:
        """Send a request without waiting for its reply, for a call whose
        answer cannot matter (closing a file opened read-only).  The daemon
        handles a connection's requests in order, so every later call on
        this connection finds it done; its reply is read and dropped before
        the next one.  Raises DaemonUnavailable if it cannot be sent."""
        with self._lock:
            self._posted.append(self._send(op, args, b""))

    def _drop_posted(self, message: Any) -> bool:
        """True if *message* is the reply to the oldest posted request (then dropped)."""
        if not (self._posted and isinstance(message, Reply) and message.id == self._posted[0]):
            return False
        self._posted.popleft()
        if message.errno:
            log.warning("libcephfsd: %s (a call not waited for)", message.result)
        return True

    def window(self) -> memoryview | None:
        """The data window shared with the daemon (DATA_WINDOW), or None.

        Asked for on first use (the session must be mounted); refused or
        unavailable, it stays None and large I/O goes inline.  Move data
        with read_window/write_window, ``window_lock`` held (taken before the
        connection's own lock, as close() does); they check again under it
        that close() has not released the window.
        """
        window = self._window
        if window is None:
            window = self._window = self._open_window()
        return window if isinstance(window, memoryview) else None

    def _open_window(self) -> memoryview | bool:
        if Feature.DATA_WINDOW not in self.hello.features:
            return False
        fds: list[int] = []
        with self._lock:
            reply = self._exchange(Op.WINDOW, (), b"", fds)
        try:
            if reply.errno or len(fds) != 1:
                return False
            size = int(reply.result["size"])
            self._window_map = mmap.mmap(fds[0], size)
            self._window_anchor = ctypes.c_char.from_buffer(self._window_map)
            self._window_address = ctypes.addressof(self._window_anchor)
            return memoryview(self._window_map)
        finally:
            for fd in fds:
                os.close(fd)

    def fetch(self, op: Op, args: list | tuple, key: Hashable,
              convert: Callable[[Any], Any],
              also: Callable[[Any], Iterable[Hashable]] | None = None) -> Any:
        """Call a cacheable op; cache the (converted) answer when the daemon allows.

        An error answer is cached as its ErrorReply (a cached "no such file")
        and raised.  *also*, given the answer, names more keys it answers
        (cached with the same deps and deadline).
        """
        shared = self._shared
        if shared is None:
            shared = self._open_shared()
        if isinstance(shared, _shared.SharedView):
            skey = _shared.key_of(op, args)
            if skey is not None:
                hit = shared.lookup(skey, time.monotonic())
                if hit is not None:
                    # Another session's answer: used, not kept (this session
                    # is told of no change to it).
                    err, result = hit
                    if self.cache is not None:
                        self.cache.stats.shared += 1
                    if err:
                        raise _error_from(err, result)
                    return convert(result)
        with self._lock:
            reply, epoch, invalidated = self._exchange_noting(op, args)
            value = _error_reply(reply) if reply.errno else convert(reply.result)
            keys = [key] if also is None else [key, *also(value)]
            self._keep(reply.meta, epoch, invalidated, [(k, value) for k in keys])
        if isinstance(value, ErrorReply):
            raise value
        return value

    def open_read(self, path: bytes, flags: int, mode: int,
                  convert_stat: Callable[[Any], Any]) -> int:
        """OPEN_READ: open to read only; cache the file's fstat (key ``(3,
        fd)``) and a small file's content (key ``(9, fd)``, a FileData) when
        the daemon allows.  Returns the fd; raises ErrorReply as call() does."""
        with self._lock:
            reply, epoch, invalidated = self._exchange_noting(
                Op.OPEN_READ, (path, flags, mode, self.readahead))
            if reply.errno:
                raise _error_reply(reply)
            result = reply.result
            if not (isinstance(result, list) and len(result) == 3 and type(result[0]) is int
                    and type(result[2]) is bool):
                raise ProtocolError(self._break(f"malformed OPEN_READ answer: {result!r}"))
            fd, st, whole = result
            if st is not None:
                try:
                    entries: list[tuple[Hashable, Any]] = [((3, fd), convert_stat(st))]
                except (TypeError, ValueError, IndexError) as exc:
                    raise ProtocolError(self._break(f"malformed OPEN_READ stat: {exc}")) from exc
                if whole:
                    entries.append(((9, fd), FileData(bytes(reply.data))))
                self._keep(reply.meta, epoch, invalidated, entries)
        return fd

    def _exchange_noting(self, op: Op, args: list | tuple) -> tuple[Reply, int, set]:
        """_exchange() of a cacheable op: (reply, the epoch before it, the deps
        invalidated while waiting for it).  Call with the lock held."""
        epoch = self._epoch
        invalidated: set = set()
        self._invalidated_in_call = invalidated
        try:
            return self._exchange(op, args, b""), epoch, invalidated
        finally:
            self._invalidated_in_call = None

    def _keep(self, meta: Any, epoch: int, invalidated: set,
              entries: list[tuple[Hashable, Any]]) -> None:
        """Cache *entries* (key, value) of one answer if its *meta* allows."""
        cache = self.cache
        if (meta is None or cache is None or epoch != self._epoch
                or not isinstance(meta, list) or len(meta) != 2):
            return
        try:
            deps = [dep_from_wire(d) for d in meta[1]]
            deadline = float(meta[0])
        except (TypeError, ValueError) as exc:
            raise ProtocolError(self._break(f"bad cache metadata: {exc}")) from exc
        # An invalidation that overtook the answer: the answer may predate
        # the change, so it is returned but not kept.
        if not invalidated.intersection(deps):
            for key, value in entries:
                cache.put(key, value, deadline, deps)

    def _open_shared(self) -> _shared.SharedView | bool:
        """Map the mount's shared table, once per mount; False if not granted."""
        if Feature.SHARED_CACHE not in self.hello.features or self.cache is None:
            self._shared = False
            return False
        fds: list[int] = []
        with self._lock:
            reply = self._exchange(Op.SHARED_CACHE, (), b"", fds)
        try:
            if reply.errno or len(fds) != 1:
                self._shared = False
                return False
            if (reply.result.get("slots"), reply.result.get("slot_size")) != (
                    _shared.SLOTS, _shared.SLOT_SIZE):
                raise ProtocolError(self._break(f"libcephfsd at {self.path} offers a shared "
                                                f"table of another layout: {reply.result!r}"))
            view = self._shared = _shared.SharedView(fds[0])
            return view
        finally:
            for fd in fds:
                os.close(fd)

    def lookup(self, key: Hashable, count_miss: bool = True) -> Any:
        """The cached answer for *key*, or MISS.  No round trip; takes the
        connection lock only when invalidations are pending.  *count_miss*
        False: a first place to look, which is no miss if empty."""
        page = self._page
        if page is None:
            return MISS
        if page[SENT] != self._applied or page[EPOCH] != self._epoch:
            self._catch_up()
        self._lookups += 1
        if self._lookups % _PUBLISH_EVERY == 0:
            self._publish()
        return self.cache.get(key, count_miss)  # type: ignore[union-attr]

    def forget(self, key: Hashable) -> None:
        if self.cache is not None:
            self.cache.discard(key)

    def clear_cache(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def left_mount(self) -> None:
        """The session unmounted: its cache and the mount's shared table go."""
        self.clear_cache()
        shared, self._shared = self._shared, None
        if isinstance(shared, _shared.SharedView):
            shared.close()

    def _catch_up(self) -> None:
        """Apply the invalidations the daemon has counted but we have not read."""
        with self._lock:
            if self._broken is not None or self._page is None:
                return
            page = self._page
            if page[EPOCH] != self._epoch:
                self._epoch = page[EPOCH]
                self.cache.clear()  # type: ignore[union-attr]
            target = page[SENT]
            try:
                while self._applied < target:
                    message = self._transport.receive()
                    if self._drop_posted(message):
                        continue
                    if not (isinstance(message, Event) and message.kind == EventKind.INVALIDATE):
                        raise ProtocolError(self._break(
                            f"libcephfsd sent {message!r} with no request outstanding"))
                    self._apply(message.payload)
            except (ConnectionClosed, OSError, protocol.ProtocolError) as exc:
                self.cache.clear()  # type: ignore[union-attr]
                raise DaemonUnavailable(
                    self._break(f"connection to libcephfsd at {self.path} lost: {exc}")) from exc

    def _apply(self, payload: Any) -> None:
        try:
            deps = [dep_from_wire(d) for d in payload]
        except (TypeError, ValueError) as exc:
            raise protocol.RemoteProtocolError(f"malformed INVALIDATE: {exc}") from exc
        self.cache.invalidate(deps)  # type: ignore[union-attr]
        self._applied += 1
        if self._invalidated_in_call is not None:
            self._invalidated_in_call.update(deps)

    def _publish(self) -> None:
        """Write this cache's counters where the daemon (and cachestat) can read them."""
        page, cache = self._page, self.cache
        if page is None or cache is None:
            return
        stats = cache.stats
        values = (len(cache), stats.hits, stats.misses, self._applied, stats.evictions,
                  stats.expirations, stats.flushes)
        for i, value in enumerate(values):
            page[CLIENT_STATS_AT + i] = value

    def _exchange(self, op: Op, args: list | tuple, data: bytes | bytearray | memoryview,
                  fds: list[int] | None = None) -> Reply:
        """One request and its reply; call with the lock held.  Descriptors
        that come with the reply are appended to *fds* if given."""
        return self._await(self._send(op, args, data), fds)

    def _send(self, op: Op, args: list | tuple, data: bytes | bytearray | memoryview) -> int:
        """Send a request (lock held); returns its id."""
        broken = self._broken
        if broken is not None:
            raise DaemonUnavailable(broken)
        rid = self._next_id
        self._next_id = rid + 1 if rid < 0xFFFFFFFF else 1
        try:
            self._transport.send(Request(rid, op, list(args), data))
        except OSError as exc:
            raise DaemonUnavailable(
                self._break(f"connection to libcephfsd at {self.path} lost: {exc}")) from exc
        return rid

    def _await(self, rid: int, fds: list[int] | None = None) -> Reply:
        """The reply to request *rid*, the next one due (lock held)."""
        try:
            reply = self._receive(fds)
            while True:
                if (isinstance(reply, Event) and reply.kind == EventKind.INVALIDATE
                        and self.cache is not None):
                    self._apply(reply.payload)
                elif not self._drop_posted(reply):
                    break
                reply = self._receive(fds)
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
        if self._page is not None:
            self._publish()
        return reply

    def read_window(self, fd: int, offset: int, length: int) -> bytes:
        """Read through the window (held by the caller with ``window_lock``).

        Pieces of half the window alternate between its halves: when a piece
        arrives whole, the next one is asked for before this one is copied
        out, so the daemon's read and the client's copy overlap, and nothing
        is asked for past a short piece (the end of the file).  Each piece is
        copied straight into the bytes object returned (one allocation, as
        the binding makes).  Raises ErrorReply for an error on the first
        piece; an error on a later one ends the read there, as a short read
        (what was read is returned, as read(2) would).
        """
        window = self._window
        if not isinstance(window, memoryview):       # closed meanwhile
            raise DaemonUnavailable(self._broken or "connection closed")
        half = len(window) // 2
        pieces = [(start, min(half, length - start)) for start in range(0, length, half)]
        out = _new_bytes(None, length)
        dest = _bytes_address(out)
        got = 0
        release = False

        def issue(i: int) -> int:
            start, size = pieces[i]
            return self._send(Op.READ_WINDOW, (fd, offset + start if offset >= 0 else offset,
                                               size, (i % 2) * half), b"")

        with self._lock:
            rid, i = issue(0), 0
            while True:
                reply = self._await(rid)
                if reply.errno:
                    if not got:
                        raise _error_reply(reply)
                    break
                n, released = reply.result
                release = release or released
                whole = n == pieces[i][1]
                if whole and i + 1 < len(pieces):
                    rid = issue(i + 1)      # the daemon reads it while we copy this one
                ctypes.memmove(dest + got, self._window_address + (i % 2) * half, n)
                got += n
                if not whole or i + 1 >= len(pieces):
                    break
                i += 1
        if release and self._window_map is not None:
            self._window_map.madvise(mmap.MADV_REMOVE)
        return out if got == length else out[:got]

    def read_buffered(self, fd: int, offset: int, length: int) -> bytes | None:
        """Read into a read buffer and return its object (``window_lock``
        held); None if no buffer is free or can be had (read through the
        window then).

        Pieces of ``max_data`` are all sent before the first reply (one at a
        time at the file position, offset < 0), and every reply is read
        before returning: the daemon must be done writing into the buffer.
        The result ends at the first short piece.  Raises ErrorReply for an
        error on the first piece; an error on a later one ends the read
        there, as a short read.
        """
        buffer = self._free_buffer(length)
        if buffer is None:
            return None
        chunk = self.hello.max_data
        pieces = [(start, min(chunk, length - start)) for start in range(0, length, chunk)]

        def issue(start: int, size: int) -> int:
            return self._send(Op.READ_BUFFER, (fd, offset + start if offset >= 0 else offset,
                                               size, buffer.bid, _readbuf.PAGE + start), b"")

        replies = []
        spin = self._transport.spin
        with self._lock:
            if spin is not None:
                # Each reply takes the daemon's copy of a piece: poll that
                # much longer rather than sleep and pay a wake-up per piece.
                spin.stretch = min(pieces[0][1] * _SPIN_PER_BYTE, _SPIN_STRETCH_MAX)
            try:
                if offset >= 0:
                    for rid in [issue(*piece) for piece in pieces]:
                        replies.append(self._await(rid))
                else:
                    for start, size in pieces:
                        reply = self._await(issue(start, size))
                        replies.append(reply)
                        if reply.errno or reply.result != size:
                            break
            finally:
                if spin is not None:
                    spin.stretch = 0.0
        got = 0
        for (start, size), reply in zip(pieces, replies):
            if reply.errno:
                if not start:
                    raise _error_reply(reply)
                break
            n = self._byte_count(Op.READ_BUFFER, size, reply.result)
            got += n
            if n < size:
                break
        if got < _readbuf.MIN_READ // 2:
            # A short read (end of file) would pin the buffer for a few bytes.
            return ctypes.string_at(buffer.data, got)
        return buffer.hand_out(got)

    def write_buffered(self, fd: int, offset: int, data: bytes) -> int | None:
        """Write *data* straight from its read buffer, if it is one of this
        connection's results (``window_lock`` held); None if not.

        Copying a file reads into a buffer and writes the same bytes out:
        the daemon writes them from the buffer, with no copy here.  The
        caller's reference keeps the buffer from being read into meanwhile.
        Pieces of ``max_data``, one request at a time, as written one after
        the other; raises ErrorReply for an error on any piece.
        """
        buffer = next((b for b in self._buffers if b.holds(data)), None)
        if buffer is None:
            return None
        chunk = self.hello.max_data
        done = 0
        with self._lock:
            for start in range(0, len(data), chunk):
                size = min(chunk, len(data) - start)
                reply = self._exchange(Op.WRITE_BUFFER, (
                    fd, offset + start if offset >= 0 else offset, size, buffer.bid,
                    _readbuf.PAGE + start), b"")
                if reply.errno:
                    raise _error_reply(reply)
                n = self._byte_count(Op.WRITE_BUFFER, size, reply.result)
                done += n
                if n < size:
                    break
        return done

    def _byte_count(self, op: Op, size: int, n: Any) -> int:
        """A READ_BUFFER or WRITE_BUFFER reply's byte count, checked."""
        if type(n) is not int or not 0 <= n <= size:
            raise ProtocolError(self._break(f"libcephfsd at {self.path} answered {op.name} "
                                            f"of {size} bytes with {n!r}"))
        return n

    def _free_buffer(self, length: int) -> _readbuf.ReadBuffer | None:
        """A free buffer for *length* bytes, made if need be (``window_lock`` held)."""
        for buffer in [b for b in self._buffers if b.forked and b.free()]:
            self._drop_buffer(buffer)
        best = min((b for b in self._buffers
                    if not b.forked and length <= b.capacity <= length * _readbuf.SLACK
                    and b.free()), key=lambda b: b.capacity, default=None)
        if best is not None or self._broken is not None:
            return best
        if Feature.READ_BUFFERS not in self.hello.features:
            return None
        if len(self._buffers) >= _readbuf.PER_CONNECTION:
            # Make room by dropping a free buffer of the wrong size, if any.
            spare = next((b for b in self._buffers if b.free()), None)
            if spare is None:
                return None
            self._drop_buffer(spare)
        if time.monotonic() < self._buffers_refused_until:
            return None
        return self._new_buffer(_readbuf.capacity_for(length))

    def _new_buffer(self, capacity: int) -> _readbuf.ReadBuffer | None:
        size = _readbuf.buffer_size(capacity)
        if not _readbuf.reserve(size):
            return None
        fds: list[int] = []
        buffer = None
        try:
            with self._lock:
                reply = self._exchange(Op.BUFFER, (size,), b"", fds)
            if reply.errno or len(fds) != 1:
                # The daemon's buffers are all taken: try again later, not on every read.
                self._buffers_refused_until = time.monotonic() + 1.0
                return None
            try:
                bid, granted = int(reply.result["id"]), int(reply.result["size"])
            except (TypeError, KeyError, ValueError):
                raise ProtocolError(self._break(f"libcephfsd at {self.path} answered BUFFER "
                                                f"with {reply.result!r}")) from None
            if granted < size:      # mapping past the memfd's end would fault on use
                raise ProtocolError(self._break(f"libcephfsd at {self.path} made a read "
                                                f"buffer of {granted} bytes, not {size}"))
            try:
                buffer = _readbuf.ReadBuffer(bid, fds[0], size)
            except (OSError, RuntimeError) as exc:
                log.warning("libcephfs_proxy: read buffers disabled on %r: %s", self, exc)
                self._buffers_refused_until = float("inf")
                self.post(Op.FREE_BUFFER, (bid,))
                return None
        finally:
            for fd in fds:
                os.close(fd)
            if buffer is None:
                _readbuf.unreserve(size)
        self._buffers.append(buffer)
        return buffer

    def _drop_buffer(self, buffer: _readbuf.ReadBuffer) -> None:
        """Free a buffer nobody references, here and in the daemon."""
        self._buffers.remove(buffer)
        buffer.unmap()
        self.post(Op.FREE_BUFFER, (buffer.bid,))

    def write_window(self, fd: int, offset: int, data: memoryview) -> int:
        """Write through the window (held by the caller with ``window_lock``).

        Pieces of half the window, one request at a time, exactly as written
        one after the other, so a failed piece is never followed by a later
        one; but the next piece is copied into the other half while the
        daemon writes this one.  Returns the bytes written (fewer after a
        short piece); raises ErrorReply for an error on any piece.
        """
        window = self._window
        if not isinstance(window, memoryview):       # closed meanwhile
            raise DaemonUnavailable(self._broken or "connection closed")
        half = len(window) // 2
        total = len(data)
        pieces = [(start, min(half, total - start)) for start in range(0, total, half)]
        done = 0

        def fill(i: int) -> None:
            start, size = pieces[i]
            at = (i % 2) * half
            window[at:at + size] = data[start:start + size]

        def issue(i: int) -> int:
            start, size = pieces[i]
            return self._send(Op.WRITE_WINDOW, (fd, offset + start if offset >= 0 else offset,
                                                size, (i % 2) * half), b"")

        with self._lock:
            fill(0)
            rid = issue(0)
            for i in range(len(pieces)):
                if i + 1 < len(pieces):
                    fill(i + 1)             # while the daemon writes piece i
                reply = self._await(rid)
                if reply.errno:
                    raise _error_reply(reply)
                n = reply.result
                done += n
                if n < pieces[i][1]:
                    break
                if i + 1 < len(pieces):
                    rid = issue(i + 1)
        return done

    def _break(self, reason: str) -> str:
        """Mark the connection unusable for *reason*, which it returns."""
        self._broken = reason
        self.clear_cache()
        try:
            self._transport.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return reason

    def _receive(self, fds: list[int] | None) -> Any:
        if fds is None:
            return self._transport.receive()
        message, received = self._transport.receive_with_fds()
        fds.extend(received)
        return message

    def close(self) -> None:
        # window_lock first: window users take it before the connection's lock.
        with self.window_lock, self._lock:
            if self._broken is None:
                self._broken = "connection closed"
            self.clear_cache()
            self._transport.close()
            if isinstance(self._window, memoryview):
                self._window.release()
                self._window = False
            if self._window_map is not None:
                self._window_anchor = None
                self._window_map.close()
                self._window_map = None
            if isinstance(self._shared, _shared.SharedView):
                self._shared.close()
            self._shared = False
            # The daemon frees its side with the session; here a buffer whose
            # object is still in use stays mapped until it is not.
            for buffer in self._buffers:
                if buffer.free():
                    buffer.unmap()
                else:
                    _readbuf.orphan(buffer)
            self._buffers.clear()
            if self._page is not None:
                self._page.release()
                self._page = None
            if self._map is not None:
                self._map.close()
                self._map = None


def _error_reply(reply: Reply) -> ErrorReply:
    return _error_from(reply.errno, reply.result)


def _error_from(err: int, result: Any) -> ErrorReply:
    if isinstance(result, list) and len(result) == 2:
        return ErrorReply(err, str(result[0]), result[1] == protocol.ErrorSource.CEPHFS)
    return ErrorReply(err, str(result), False)


def daemon_status(path: str | None = None) -> dict:
    """The daemon's STATUS: sessions, mounts, handle counts and cache statistics.

    Only root and the daemon's own user may ask.  Raises DaemonUnavailable,
    or PermissionError for anyone else.
    """
    from ._errors import make_ex

    conn = Connection(path, cache_entries=None)
    try:
        return conn.call(Op.STATUS)[0]
    except ErrorReply as exc:
        raise make_ex(exc.errno, exc.message) from None
    finally:
        conn.close()

