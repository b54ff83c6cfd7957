"""The listening socket, one thread per client connection, and shutdown.

Threading model: the main thread accepts; each connection gets one thread
that reads a request, calls libcephfs itself and writes the reply.  No hand-off
on the request path (every thread hop costs tens of microseconds here), and a
slow call (an MDS round trip, a big write) blocks only its own client, since
the binding releases the GIL inside libcephfs.  Requests of one connection
are answered in order.  Connection threads share one CPU (placement.py):
handing the GIL between them is then cheap.

Shutdown (SIGTERM/SIGINT): close the listening socket, shut down the reading
side of every connection so each thread finishes the call it is in, answers
it, and sees end-of-stream; every session then closes its files and
directories and drops its mount; remaining mounts are unmounted; the socket
file is removed.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import threading
import time
from typing import Any, Callable

from . import __version__
from .backend import CephBackend
from .coherence import Coherence
from .mounts import MountRegistry
from .peer import peer_of
from .placement import Placement
from .protocol import (DEFAULT_MAX_DATA, HANDSHAKE_MAX_DATA, ErrorSource, Event, EventKind,
                       FrameError, Reply, Request, RequestError)
from .session import Session
from .transport import ConnectionClosed, SocketTransport, SpinPoll
from .window import BufferPool, WindowPool

log = logging.getLogger(__name__)

#: Stack per connection thread.  Python frames live on the heap; libcephfs
#: calls are shallow.  Only touched pages cost memory, but this bounds the
#: address space of thousands of threads.
THREAD_STACK = 512 << 10
#: Seconds between housekeeping runs (returning freed memory to the system).
HOUSEKEEPING_INTERVAL = 2.0
#: A connection polls only if no other one received a request for this long (s).
_QUIET_FOR = 0.002


class ByteBudget:
    """Caps the bytes of file data the daemon holds for requests at once.

    A connection whose request needs more than what is left waits (its
    client's send blocks in turn): that is the backpressure.  A single
    request larger than the whole budget proceeds alone, so none can wait
    forever.  Thread-safe.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.waits = 0
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return f"<ByteBudget {self.used}/{self.limit} peak={self.peak} waits={self.waits}>"

    def acquire(self, n: int) -> None:
        with self._cond:
            if self.used and self.used + n > self.limit:
                self.waits += 1
                while self.used and self.used + n > self.limit:
                    self._cond.wait()
            self.used += n
            self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()

    def describe(self) -> dict:
        return {"limit": self.limit, "used": self.used, "peak": self.peak, "waits": self.waits}


class DaemonRunning(Exception):
    """Another daemon already answers on the socket path."""


class Server:
    """A libcephfsd instance: its socket, its sessions, its mounts."""

    def __init__(self, socket_path: str, *, socket_mode: int = 0o660,
                 max_data: int = DEFAULT_MAX_DATA, private_dir: str,
                 shutdown_timeout: float = 30.0, backend: CephBackend | None = None,
                 coherence: Coherence | None = None, max_inflight: int | None = None,
                 spin_us: float = 0.0, housekeeping: Callable[[], None] | None = None,
                 max_read_buffers: int | None = None, placement: Placement | None = None):
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.max_data = max_data
        #: File data held for requests, across all connections.
        self.budget = ByteBudget(max(max_inflight or 64 * max_data, max_data))
        #: Clients' data windows: their pages kept between calls fit in half
        #: the in-flight budget.
        self.windows = WindowPool(self.budget.limit // 2)
        #: Clients' read buffers, mapped for their sessions' lives.
        self.buffers = BufferPool(32 * max_data if max_read_buffers is None
                                  else max_read_buffers)
        self.shutdown_timeout = shutdown_timeout
        #: How long a connection's thread polls for its client's next request
        #: before sleeping (0: never); see SpinPoll and _Connection._may_spin.
        self.spin_us = spin_us
        #: Run by the accept loop every HOUSEKEEPING_INTERVAL seconds.
        self.housekeeping = housekeeping
        self._spin_gate = threading.Lock()
        #: Where connection threads run (default: anywhere).
        self.placement = placement or Placement(None)
        #: The connection that received a request last, and when.
        self.last_request: tuple[_Connection | None, float] = (None, 0.0)
        self.private_dir = private_dir
        self.backend = backend or CephBackend()
        #: Client caches and their invalidation, when enabled (--enable-client-cache).
        self.coherence = coherence
        self.mounts = MountRegistry(coherence)
        self.uid = os.getuid()
        self.version = __version__
        self.started = time.time()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}
        self._next_session = 1
        self._stopping = threading.Event()
        # stop() may run in a signal handler: it only writes a byte here,
        # which wakes the accept loop's select().
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def __repr__(self) -> str:
        return (f"<Server {self.socket_path} sessions={len(self._connections)} "
                f"{self.mounts!r}{' stopping' if self._stopping.is_set() else ''}>")

    # -- socket -------------------------------------------------------------

    def bind(self) -> None:
        """Create the listening socket, replacing a stale one, refusing a live one."""
        path = self.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise DaemonRunning(f"{path} exists and is not a socket; not touching it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("removing stale socket %s", path)
                os.unlink(path)
            except OSError as exc:
                raise DaemonRunning(f"cannot tell whether a daemon owns {path}: {exc}") from exc
            else:
                raise DaemonRunning(f"a daemon already answers on {path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Nobody may connect before the mode is right: bind with a tight umask.
        old = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, self.socket_mode)
        listener.listen(socket.SOMAXCONN)
        listener.setblocking(False)
        self._listener = listener
        log.info("listening on %s (mode %04o; polling %g us for a next call)", path,
                 self.socket_mode, self.spin_us)

    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; then drain and clean up."""
        assert self._listener is not None, "bind() first"
        threading.stack_size(THREAD_STACK)
        try:
            while not self._stopping.is_set():
                waitables: list[Any] = [self._listener, self._wake_r]
                readable, _, _ = select.select(waitables, [], [], HOUSEKEEPING_INTERVAL)
                if self._wake_r in readable:
                    break
                if not readable:
                    if self.housekeeping is not None:
                        self.housekeeping()
                    continue
                try:
                    sock, _ = self._listener.accept()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("accept failed, out of resources (%s); retrying in 100 ms", exc)
                        time.sleep(0.1)
                        continue
                    raise
                sock.setblocking(True)
                self._start_connection(sock)
        finally:
            self._drain()

    def stop(self) -> None:
        """Stop accepting; serve_forever() then drains.  Safe from a signal handler."""
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _start_connection(self, sock: socket.socket) -> None:
        try:
            peer = peer_of(sock)
        except OSError as exc:
            log.warning("dropping a connection whose credentials cannot be read: %s", exc)
            sock.close()
            return
        with self._lock:
            sid = self._next_session
            self._next_session += 1
            conn = _Connection(self, sock, Session(self, sid, peer))
            self._connections[sid] = conn
        try:
            conn.thread.start()
        except RuntimeError as exc:  # can't start a new thread
            log.error("cannot start a thread for %r: %s", conn.session, exc)
            with self._lock:
                del self._connections[sid]
            sock.close()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.pop(conn.session.id, None)

    def _drain(self) -> None:
        log.info("shutting down: no new connections; waiting for calls in progress")
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            conn.stop_reading()
        deadline = time.monotonic() + self.shutdown_timeout
        for conn in conns:
            conn.thread.join(max(0.0, deadline - time.monotonic()))
            if conn.thread.is_alive():
                log.warning("%r still busy after %.0fs; unmounting under it",
                            conn.session, self.shutdown_timeout)
        self.mounts.unmount_all()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        log.info("shut down")

    # -- introspection ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Sessions, mounts and open-handle counts (the STATUS admin request)."""
        with self._lock:
            sessions = [c.session.describe() for c in self._connections.values()]
        mounts = self.mounts.snapshot()
        return {
            "server": f"libcephfsd {__version__}", "pid": os.getpid(),
            "uptime": time.time() - self.started,
            "sessions": sessions, "mounts": mounts,
            "inflight_bytes": self.budget.describe(),
            "windows": self.windows.describe(),
            "read_buffers": self.buffers.describe(),
            "placement": self.placement.describe(),
            "cache": None if self.coherence is None else {
                "ttl": self.coherence.ttl, "max_entries": self.coherence.max_entries,
                "filesystems": [t.stats() for t in self.coherence.trackers()],
                "clients_timed_out": sum(s["cache"]["timed_out"] for s in sessions
                                         if s.get("cache"))},
            "totals": {"sessions": len(sessions), "mounts": len(mounts),
                       "open_files": sum(s["open_files"] for s in sessions),
                       "open_dirs": sum(s["open_dirs"] for s in sessions)},
        }


class _Connection:
    """One client connection: its socket, its session, its thread."""

    def __init__(self, server: Server, sock: socket.socket, session: Session):
        self.server = server
        self.session = session
        self.transport = SocketTransport(sock, max_data_in=HANDSHAKE_MAX_DATA,
                                         max_data_out=server.max_data)
        self.transport.before_data = self._reserve
        if server.spin_us > 0:
            self.transport.spin = SpinPoll(server.spin_us, server._spin_gate, self._may_spin)
        session.transport = self.transport
        session.reserve = self._reserve
        #: Bytes of the budget this connection holds for the request in hand.
        self.reserved = 0
        self.thread = threading.Thread(target=self._run, name=f"session-{session.id}",
                                       daemon=True)

    def _may_spin(self) -> bool:
        # Poll only while this client is the one keeping the daemon busy: a
        # polling thread keeps retaking the GIL, which would slow another
        # connection's thread down, and when several are busy the CPUs are
        # not idle, so wake-ups are cheap anyway.
        last, at = self.server.last_request
        return last is self or time.perf_counter() - at > _QUIET_FOR

    def _reserve(self, n: int) -> None:
        self.server.budget.acquire(n)
        self.reserved += n

    def stop_reading(self) -> None:
        try:
            self.transport.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _run(self) -> None:
        session, transport = self.session, self.transport
        session.thread_id = threading.get_native_id()
        self.server.placement.python_thread()
        log.debug("%r connected", session)
        reason = "closed by client"
        try:
            while True:
                try:
                    request = transport.receive()
                except RequestError as exc:
                    with session.send_lock:
                        transport.send(Reply(exc.request_id, exc.errno,
                                             [str(exc), ErrorSource.DAEMON]))
                    continue
                if type(request) is not Request:
                    raise FrameError(f"a client may only send requests, not {request!r}")
                self.server.last_request = (self, time.perf_counter())
                try:
                    reply = session.handle(request)
                    with session.send_lock:
                        if session.fds_to_send:
                            fds, session.fds_to_send = session.fds_to_send, []
                            transport.send(reply, fds)
                        else:
                            transport.send(reply)
                finally:
                    if session.fds_to_close:     # sent (the client has its own) or not
                        for fd in session.fds_to_close:
                            os.close(fd)
                        session.fds_to_close = []
                    # The request's data and the reply's are gone now.
                    request = reply = None  # type: ignore[assignment]
                    self.server.budget.release(self.reserved)
                    self.reserved = 0
        except ConnectionClosed as exc:
            if not exc.clean:
                reason = "closed by client mid-frame"
        except FrameError as exc:
            reason = f"protocol error: {exc}"
            log.warning("%r: %s; closing the connection", session, exc)
            try:
                with session.send_lock:
                    transport.send(Event(EventKind.GOODBYE, [exc.errno, str(exc)]))
            except OSError:
                pass
        except OSError as exc:
            reason = f"socket error: {exc}"
        except Exception:
            reason = "internal error"
            log.exception("%r: unexpected error; closing the connection", session)
        finally:
            self.server.budget.release(self.reserved)
            self.reserved = 0
            try:
                session.close()
            except Exception:
                log.exception("%r: cleanup failed", session)
            transport.close()
            self.server._forget(self)
            log.debug("%r gone: %s", session, reason)
