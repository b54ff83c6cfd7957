"""Keeping client caches coherent: who caches what, and telling them when it changes.

Dependencies ("deps") name what a cached answer was read from: an inode
number (its attributes, its symlink target, the directory's permissions) or a
directory entry ``(parent_ino, name)``.  Inode numbers belong to the
filesystem, so one :class:`CacheTracker` serves every mount of one filesystem:
a change through any mount of the daemon reaches caches fed by any other.

Delivery without waiting (the guarantee protocol.md states):

1. a mutation is made in libcephfs;
2. :meth:`CacheTracker.invalidate` writes an INVALIDATE event into the socket
   of every session registered on one of the changed deps (non-blocking) and
   then bumps that session's ``sent`` counter in a memory page shared with the
   client (:class:`Notifier`); a session whose socket cannot take the event
   gets its ``epoch`` bumped instead, which tells the client to drop its whole
   cache, and its registrations are forgotten;
3. only then is the mutating call answered.

A client trusts a cache entry only after checking, in shared memory, that it
has applied every event counted in ``sent`` and seen the current ``epoch``.
Any call that starts after the mutating call returned therefore sees the
change: the event is already in its socket and counted.

A fill races with a mutation when the daemon reads the answer before the
mutation and registers it after the invalidation.  :meth:`begin` returns the
sequence number before the read; :meth:`register` refuses the fill when one
of its deps (by hash bucket) was invalidated since.

Threading: each tracker has one lock guarding its tables; notifiers have
their own send lock, shared with their session's replies.  The tracker lock
is never held while waiting for anything but memory.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import select
import socket
import statistics
import threading
import time
from collections import deque
from typing import Any, Hashable, Iterable

from .protocol import Event, EventKind, encode
from .transport import send_nowait

log = logging.getLogger(__name__)

Dep = Hashable

#: Shared page layout (u64, native endianness), see protocol.md "Cache page".
PAGE_SIZE = 4096
SENT, EPOCH = 0, 1
CLIENT_STATS = ("entries", "hits", "misses", "applied", "evictions", "expirations", "flushes")
CLIENT_STATS_AT = 8           # first u64 slot the client writes

#: Hash buckets remembering the last invalidation of each dep.
BUCKETS = 1 << 16
#: Delivery times kept for the median and worst.
DELIVERY_SAMPLES = 1024
#: Longest a changing call waits, in all, for receivers' send locks (held
#: while their own replies are written).  Past it, a receiver's whole cache
#: is declared invalid instead: a client that stops reading blocks its own
#: replies with the lock held, and must not hold up anyone else.
LOCK_BUDGET = 0.05


class Notifier:
    """One session's side of the cache channel: its shared page and its send lock."""

    def __init__(self, sock: socket.socket, send_lock: threading.Lock, session_id: int,
                 max_deps: int):
        self.sock = sock
        self.send_lock = send_lock
        self.session_id = session_id
        self.max_deps = max_deps
        self._memfd = os.memfd_create(f"libcephfsd-session-{session_id}", os.MFD_CLOEXEC)
        os.ftruncate(self._memfd, PAGE_SIZE)
        self._map = mmap.mmap(self._memfd, PAGE_SIZE)
        self.page = memoryview(self._map).cast("Q")
        self.timed_out = 0
        #: Set (under send_lock) when the session is gone: deliveries become no-ops.
        self.closed = False

    def __repr__(self) -> str:
        return (f"<Notifier session={self.session_id} sent={self.page[SENT]} "
                f"epoch={self.page[EPOCH]}>")

    def fd_for_client(self) -> int:
        """A descriptor of the shared page to pass to the client (SCM_RIGHTS)."""
        return self._memfd

    def notify(self, deps: list[Dep], deadline: float) -> bool:
        """Queue an INVALIDATE event without blocking on the socket, waiting for
        the send lock until *deadline* (time.monotonic) at most.  False: the
        client's cache was declared invalid instead (epoch bumped)."""
        frame = encode(Event(EventKind.INVALIDATE, [_dep_to_wire(d) for d in deps]))
        if not self.send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._give_up("its connection is busy sending (a client not reading?)")
            return False
        try:
            if self.closed:      # the session ended meanwhile: nobody left to tell
                return True
            blob = b"".join(frame)
            try:
                sent = send_nowait(self.sock, blob)
            except OSError:
                self._give_up("its socket is gone")
                return False
            if sent == 0:
                self._give_up("its socket is full")
                return False
            if sent < len(blob) and not self._finish(frame, sent, len(blob)):
                return False
            self.page[SENT] += 1
        finally:
            self.send_lock.release()
        return True

    def _finish(self, frame: list, sent: int, total: int) -> bool:
        # A partial write of a small frame is near impossible; if it happens
        # the rest must follow or the stream is corrupt: allow 1 s, then end
        # the connection (the client then drops its cache with it).
        rest = b"".join(bytes(b) for b in frame)[sent:]
        deadline = time.monotonic() + 1.0
        while rest:
            timeout = deadline - time.monotonic()
            try:
                # No settimeout: the timeout is the socket's, and the
                # connection's own thread is receiving on it meanwhile.
                writable = select.poll()     # not select(): fds pass 1024 here
                writable.register(self.sock, select.POLLOUT)
                if timeout <= 0 or not writable.poll(timeout * 1000):
                    raise TimeoutError
                n = self.sock.send(rest, socket.MSG_DONTWAIT)
                rest = rest[n:]
            except BlockingIOError:
                continue
            except OSError:
                log.warning("session %d: invalidation stuck half-written; closing it",
                            self.session_id)
                self.flush()
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return False
        return True

    def _give_up(self, why: str) -> None:
        self.timed_out += 1
        log.info("session %d: %s; its whole cache is declared invalid", self.session_id, why)
        self.flush()

    def flush(self) -> None:
        """Declare the client's whole cache invalid (any thread)."""
        try:
            if not self.closed:
                self.page[EPOCH] += 1
        except ValueError:  # released under us: the session is gone anyway
            pass

    def client_stats(self) -> dict[str, int]:
        """What the client reports in its half of the page (informational only)."""
        return {name: int(self.page[CLIENT_STATS_AT + i]) for i, name in enumerate(CLIENT_STATS)}

    def close(self) -> None:
        """Call with send_lock held.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.page.release()
        self._map.close()
        os.close(self._memfd)


def _dep_to_wire(dep: Dep) -> Any:
    return list(dep) if isinstance(dep, tuple) else dep


def dep_from_wire(value: Any) -> Dep:
    """A dependency as msgpack brings it: int, or [int, bytes] for a directory entry."""
    if type(value) is int:
        return value
    if (isinstance(value, list) and len(value) == 2 and type(value[0]) is int
            and isinstance(value[1], bytes)):
        return (value[0], value[1])
    raise ValueError(f"not a cache dependency: {value!r}")


class CacheTracker:
    """Who caches what on one filesystem, and the invalidations that follow changes."""

    def __init__(self, name: str, ttl: float, max_records: int,
                 timer: Any = time.monotonic):
        self.name = name
        self.ttl = ttl
        self.max_records = max_records
        self._timer = timer
        self._lock = threading.Lock()
        self._seq = 0
        self._blind_seq = 0
        self._bucket_seq = [0] * BUCKETS
        #: dep -> {notifier: deadline}
        self._watchers: dict[Dep, dict[Notifier, float]] = {}
        #: notifier -> {dep: deadline}
        self._by_session: dict[Notifier, dict[Dep, float]] = {}
        #: dep -> deliveries under way for it (see invalidate)
        self._in_flight: dict[Dep, set[threading.Event]] = {}
        self._records = 0
        self.invalidations_sent = 0
        self.callbacks = 0
        self.refused = 0
        self._delivery: deque[float] = deque(maxlen=DELIVERY_SAMPLES)

    def __repr__(self) -> str:
        return (f"<CacheTracker {self.name} sessions={len(self._by_session)} "
                f"records={self._records}>")

    # -- fills ---------------------------------------------------------------------

    def begin(self) -> int:
        """Call before reading an answer that may be cached; pass the result to register()."""
        return self._seq

    def register(self, notifier: Notifier, deps: Iterable[Dep], seq0: int) -> float | None:
        """Record that *notifier*'s client will cache an answer read since *seq0*.

        Returns the answer's deadline, or None when it must not be cached
        (a dependency changed meanwhile, or a bound was reached).
        """
        deps = list(dict.fromkeys(deps))
        with self._lock:
            if self._blind_seq > seq0 or any(
                    self._bucket_seq[hash(d) % BUCKETS] > seq0 for d in deps):
                return None
            mine = self._by_session.setdefault(notifier, {})
            if (len(mine) + len(deps) > notifier.max_deps
                    or self._records + len(deps) > self.max_records):
                self._prune_expired()
                if (len(mine) + len(deps) > notifier.max_deps
                        or self._records + len(deps) > self.max_records):
                    self.refused += 1
                    return None
            deadline = self._timer() + self.ttl
            for dep in deps:
                watchers = self._watchers.get(dep)
                if watchers is None:
                    self._watchers[dep] = watchers = {}
                if notifier not in watchers:
                    self._records += 1
                watchers[notifier] = deadline
                mine[dep] = deadline
            return deadline

    def changed_since(self, deps: Iterable[Dep], seq0: int) -> bool:
        """Whether an invalidation of one of *deps*, or a blind change, came
        after *seq0* (a hint without the lock: register() is the check)."""
        return self._blind_seq > seq0 or any(
            self._bucket_seq[hash(d) % BUCKETS] > seq0 for d in deps)

    # -- changes ---------------------------------------------------------------------

    def blind(self) -> None:
        """A change whose deps are unknown: no answer read before now may be cached."""
        with self._lock:
            self._seq += 1
            self._blind_seq = self._seq

    def invalidate(self, deps: Iterable[Dep], callback: bool = False) -> int:
        """After a change: tell every session caching something that depends on *deps*.

        Returns when every event is in its receiver's socket and counted (or
        the receiver's cache declared invalid), including events that a
        concurrent invalidation of the same deps claimed and is still
        delivering: otherwise this change's reply could overtake them.
        Returns the sessions told.
        """
        t0 = time.perf_counter()
        targets: dict[Notifier, list[Dep]] = {}
        others: set[threading.Event] = set()
        claimed: list[Dep] = []
        done: threading.Event | None = None
        now = self._timer()
        with self._lock:
            self._seq += 1
            seq = self._seq
            if callback:
                self.callbacks += 1
            for dep in deps:
                self._bucket_seq[hash(dep) % BUCKETS] = seq
                pending = self._in_flight.get(dep)
                if pending:
                    others.update(pending)
                watchers = self._watchers.pop(dep, None)
                if not watchers:
                    continue
                live = False
                for notifier, deadline in watchers.items():
                    self._records -= 1
                    mine = self._by_session.get(notifier)
                    if mine is not None:
                        mine.pop(dep, None)
                    if deadline > now:
                        targets.setdefault(notifier, []).append(dep)
                        live = True
                if live:
                    if done is None:
                        done = threading.Event()
                    self._in_flight.setdefault(dep, set()).add(done)
                    claimed.append(dep)
        if targets:
            lock_deadline = time.monotonic() + LOCK_BUDGET
            for notifier, its_deps in targets.items():
                if not notifier.notify(its_deps, lock_deadline):
                    self.forget(notifier)
            with self._lock:
                for dep in claimed:
                    pending = self._in_flight.get(dep)
                    if pending is not None:
                        pending.discard(done)  # type: ignore[arg-type]
                        if not pending:
                            del self._in_flight[dep]
                self.invalidations_sent += len(targets)
                self._delivery.append(time.perf_counter() - t0)
            assert done is not None
            done.set()
        for other in others:
            # Bounded: a delivery waits LOCK_BUDGET at most for a send lock,
            # and a half-written event one second.
            if not other.wait(LOCK_BUDGET + 2.0):
                log.error("%r: a concurrent invalidation did not finish in time", self)
        return len(targets)

    def flush_all(self) -> None:
        """Every cache of this filesystem is invalid (a change too broad to describe).

        Epochs are bumped under the lock, before the registrations go: an
        invalidation that finds none must be able to rely on that.
        """
        with self._lock:
            self._seq += 1
            self._blind_seq = self._seq
            for notifier in list(self._by_session):
                notifier.flush()
                self._forget_locked(notifier)

    def forget(self, notifier: Notifier) -> None:
        """The session left or its cache was declared invalid: drop its registrations."""
        with self._lock:
            self._forget_locked(notifier)

    def _forget_locked(self, notifier: Notifier) -> None:
        mine = self._by_session.pop(notifier, None)
        if not mine:
            return
        for dep in mine:
            watchers = self._watchers.get(dep)
            if watchers is not None and watchers.pop(notifier, None) is not None:
                self._records -= 1
                if not watchers:
                    del self._watchers[dep]

    def _prune_expired(self) -> None:
        now = self._timer()
        for notifier, mine in list(self._by_session.items()):
            expired = [d for d, deadline in mine.items() if deadline <= now]
            for dep in expired:
                del mine[dep]
                watchers = self._watchers.get(dep)
                if watchers is not None and watchers.pop(notifier, None) is not None:
                    self._records -= 1
                    if not watchers:
                        del self._watchers[dep]
            if not mine:
                del self._by_session[notifier]

    # -- introspection -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            delivery = sorted(self._delivery)
            return {
                "filesystem": self.name, "ttl": self.ttl, "records": self._records,
                "sessions": len(self._by_session), "invalidations_sent": self.invalidations_sent,
                "callbacks": self.callbacks, "refused_fills": self.refused,
                "delivery_median_us": round(statistics.median(delivery) * 1e6, 1)
                if delivery else None,
                "delivery_max_us": round(delivery[-1] * 1e6, 1) if delivery else None,
            }


class Coherence:
    """The daemon's trackers, one per filesystem, and its cache settings."""

    def __init__(self, ttl: float, max_records: int, max_entries: int):
        self.ttl = ttl
        self.max_records = max_records
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._trackers: dict[tuple, CacheTracker] = {}

    def tracker_for(self, identity: tuple) -> CacheTracker:
        with self._lock:
            tracker = self._trackers.get(identity)
            if tracker is None:
                name = "/".join(str(part) for part in identity)
                tracker = CacheTracker(name, self.ttl, self.max_records)
                self._trackers[identity] = tracker
            return tracker

    def trackers(self) -> list[CacheTracker]:
        with self._lock:
            return list(self._trackers.values())


class NegativeLookup(Exception):
    """A walk found no such entry: a cacheable "does not exist"."""

    def __init__(self, err: int, message: str, deps: list[Dep]):
        super().__init__(message)
        self.errno = err
        self.deps = deps
        #: tracker.begin() before the walk, set by whoever may cache the miss
        self.seq0: int | None = None


#: statx mask for what a walk needs of each component: its inode number and
#: type.  Asking no more matters: after a size change below a directory its
#: recursive stats are dirty, and a full stat of it waits for the MDS
#: (measured: +2 to +4 ms per component).
_WALK_MASK = 0x1 | 0x100          # CEPH_STATX_MODE | CEPH_STATX_INO
_NOFOLLOW = 0x100                 # AT_SYMLINK_NOFOLLOW
_S_IFMT, _S_IFLNK, _S_IFDIR = 0o170000, 0o120000, 0o040000


def ino_and_type(fs: Any, path: bytes) -> tuple[int, int]:
    """(inode number, S_IFMT bits) of *path* itself, asking libcephfs for nothing more."""
    r = fs.statx(path, _WALK_MASK, _NOFOLLOW)
    return r["ino"], r["mode"] & _S_IFMT


def walk(fs: Any, path: bytes, follow: bool, full: bool = True,
         max_links: int = 40, root_ino: int | None = None) -> tuple[Any, bytes, list[Dep]]:
    """Resolve absolute *path* one component at a time, as libcephfs would.

    Returns (lstat of the final object if *full*, else None; its canonical
    path; deps): the inode of every directory traversed (their permissions
    guard the lookup), every directory entry used, every symlink followed,
    and the final inode.  Each step is checked with the mount's credentials,
    so errors (EACCES, ENOTDIR, ELOOP) are those libcephfs gives; ENOENT
    becomes NegativeLookup with the deps that a later creation invalidates.
    *root_ino*: the mount root's inode, if known (it never changes while
    mounted).  Every call into libcephfs costs the daemon a GIL hand-off:
    the last step's lstat is the answer itself when it is wanted.
    """
    if root_ino is None:
        root_ino, _ = ino_and_type(fs, b"/")
    cur_path, cur_ino, cur_kind = b"/", root_ino, _S_IFDIR
    deps: list[Dep] = [cur_ino]
    pending = [c for c in reversed(path.split(b"/")) if c]
    links = 0
    final = None
    while pending:
        part = pending.pop()
        if part in (b".", b"..") and cur_kind != _S_IFDIR:
            # "file/." or "file/..": libcephfs refuses these in its own way
            # (EACCES or ENOTDIR, by the file's mode); let it answer.
            raise Uncacheable()
        if part == b".":
            continue
        if part == b"..":
            deps.append((cur_ino, b".."))
            cur_path = cur_path.rsplit(b"/", 1)[0] or b"/"
            cur_ino, _ = ino_and_type(fs, cur_path)
            deps.append(cur_ino)
            continue
        child = (cur_path if cur_path != b"/" else b"") + b"/" + part
        deps.append((cur_ino, part))
        try:
            if full and not pending:
                final = fs.stat(child, follow_symlink=False)
                ino, kind = final.st_ino, final.st_mode & _S_IFMT
            else:
                ino, kind = ino_and_type(fs, child)
        except Exception as exc:
            if getattr(exc, "errno", None) == errno.ENOENT:
                raise NegativeLookup(errno.ENOENT, str(exc), deps) from None
            raise
        deps.append(ino)
        if kind == _S_IFLNK and (pending or follow):
            final = None
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, "too many levels of symbolic links")
            target = fs.readlink(child, 4096)
            if target[:1] == b"/":
                cur_path, cur_ino = b"/", root_ino
            pending.extend(c for c in reversed(target.split(b"/")) if c)
            continue
        cur_path, cur_ino, cur_kind = child, ino, kind
    if full and final is None:
        # Ended on "/", "." or "..", or a symlink's target ended so: stat it.
        final = fs.stat(cur_path, follow_symlink=False)
        if final.st_ino != cur_ino:  # replaced between the walk and now: refuse to cache
            raise Uncacheable()
    return final, cur_path, deps


class Uncacheable(Exception):
    """The walk cannot vouch for its answer (the path changed under it, or it
    is a shape only libcephfs itself should judge): answer without caching."""
