"""The shared answer table (SHARED_CACHE): one per mount, read by all its clients.

Each client's cache (CLIENT_CACHE) holds only what that client fetched, for
the TTL.  Sixteen processes that stat the same headers each fetch them once
per TTL, and with a 1-second TTL a process often comes back to a name after
its answer expired.  The sessions of one mount share its credentials, so an
answer to a path asked by one is the answer for all: the daemon also writes
it here, and every client of the mount looks here before asking.

The table is a memfd of ``SLOTS`` slots of ``SLOT_SIZE`` bytes, written by
the daemon only (clients get a read-only descriptor).  A slot holds one
answer, at the slot its key hashes to (CRC-32), the newest fill winning:

    u64 seq         even: stable; odd: being written
    f64 deadline    CLOCK_MONOTONIC seconds (time.monotonic()); past it, a miss
    u32 key length  0: empty
    u32 value length
    key             msgpack [op, *args], the request's op and args as sent
    value           msgpack [errno, result], the reply's

A reader reads seq, then the rest, then seq again: an odd or changed seq is
a miss.  The table acts for the tracker as a session of its own: a fill is
registered with the answer's deps and refused if one changed since the
answer was read, and an invalidation of a dep clears the slots filled from
it before the change's reply is sent, so a client that looks here after a
change made through the daemon completed cannot find the old answer.
Changes made elsewhere are bounded by the deadline, as in clients' caches.

Only answers to STAT, STATX and READLINK of absolute paths are shared: an
fd or a relative path means something else in another session.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import zlib
from typing import Any, Iterable

import msgpack

from .protocol import Op

SLOTS = 16384
SLOT_SIZE = 512
SIZE = SLOTS * SLOT_SIZE
_HEADER = struct.Struct("<QdII")
SHARED_OPS = frozenset({Op.STAT, Op.STATX, Op.READLINK})


def key_of(op: int, args: list | tuple) -> bytes | None:
    """The table key of a request, or None if its answer is not shared."""
    if op not in SHARED_OPS or not args:
        return None
    path = args[0]
    if type(path) is not bytes or path[:1] != b"/":
        return None
    return msgpack.packb([int(op), *args], use_bin_type=True)


def _slot(key: bytes) -> int:
    return (zlib.crc32(key) % SLOTS) * SLOT_SIZE


class SharedTable:
    """The daemon's side: fills and clears slots.  To the tracker, a notifier."""

    #: The tracker bounds a notifier's deps by this; the slots bound ours.
    max_deps = 1 << 30

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.fd = os.memfd_create("libcephfsd-shared-cache", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, SIZE)
            self.map = mmap.mmap(self.fd, SIZE)
        except OSError:
            os.close(self.fd)
            raise
        self._lock = threading.Lock()
        #: slot offset -> the deps of the answer in it
        self._slot_deps: dict[int, list] = {}
        #: dep -> slot offsets filled from it
        self._dep_slots: dict[Any, set[int]] = {}
        self.fills = self.refused = self.cleared = 0

    def __repr__(self) -> str:
        return f"<SharedTable slots={len(self._slot_deps)}/{SLOTS} fills={self.fills}>"

    def describe(self) -> dict:
        return {"slots": SLOTS, "used": len(self._slot_deps), "fills": self.fills,
                "refused": self.refused, "cleared": self.cleared}

    def read_only_fd(self) -> int:
        """A new descriptor of the table that can only be mapped read-only."""
        return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)

    def fill(self, key: bytes, err: int, result: Any, deps: list, seq0: int) -> None:
        """Share an answer read since *seq0* from *deps* (unless one changed since)."""
        value = msgpack.packb([err, result], use_bin_type=True)
        if _HEADER.size + len(key) + len(value) > SLOT_SIZE:
            return
        deadline = self.tracker.register(self, deps, seq0)
        if deadline is None:
            self.refused += 1
            return
        with self._lock:
            # An invalidation that registered before us but had not reached
            # notify() yet would clear the slot only after we fill it; one
            # whose seq we see here may already have: refuse.
            if self.tracker.changed_since(deps, seq0):
                self.refused += 1
                return
            at = _slot(key)
            self._clear_locked(at)
            self._write_locked(at, deadline, key + value, len(key))
            self._slot_deps[at] = deps
            for dep in deps:
                self._dep_slots.setdefault(dep, set()).add(at)
            self.fills += 1

    def _clear_locked(self, at: int) -> None:
        deps = self._slot_deps.pop(at, None)
        if deps is None:
            return
        for dep in deps:
            slots = self._dep_slots.get(dep)
            if slots is not None:
                slots.discard(at)
                if not slots:
                    del self._dep_slots[dep]
        self._write_locked(at, 0.0, b"", 0)
        self.cleared += 1

    def _write_locked(self, at: int, deadline: float, body: bytes, key_len: int) -> None:
        """Rewrite the slot at *at* (key then value in *body*) under its seqlock:
        odd while it changes, even again after."""
        m = self.map
        seq = _HEADER.unpack_from(m, at)[0]
        struct.pack_into("<Q", m, at, seq + 1)
        m[at + _HEADER.size:at + _HEADER.size + len(body)] = body
        _HEADER.pack_into(m, at, seq + 1, deadline, key_len, len(body) - key_len)
        struct.pack_into("<Q", m, at, seq + 2)

    # -- the tracker's notifier interface ------------------------------------------------

    def notify(self, deps: Iterable[Any], deadline: float) -> bool:
        with self._lock:
            for dep in deps:
                for at in list(self._dep_slots.get(dep, ())):
                    self._clear_locked(at)
        return True

    def flush(self) -> None:
        with self._lock:
            for at in list(self._slot_deps):
                self._clear_locked(at)

    def close(self) -> None:
        self.tracker.forget(self)
        self.flush()
        self.map.close()
        os.close(self.fd)


class SharedView:
    """A client's side: lookups, no system call."""

    def __init__(self, fd: int):
        self.map = mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)
        self.hits = self.misses = 0

    def lookup(self, key: bytes, now: float) -> tuple[int, Any] | None:
        """``(errno, result)`` shared for *key*, or None."""
        m = self.map
        at = _slot(key)
        seq, deadline, klen, vlen = _HEADER.unpack_from(m, at)
        if seq & 1 or klen != len(key) or deadline <= now:
            self.misses += 1
            return None
        start = at + _HEADER.size
        if m[start:start + klen] != key or klen + vlen + _HEADER.size > SLOT_SIZE:
            self.misses += 1
            return None
        value = m[start + klen:start + klen + vlen]
        if _HEADER.unpack_from(m, at)[0] != seq:
            self.misses += 1
            return None
        try:
            err, result = msgpack.unpackb(value, raw=False, strict_map_key=False)
        except Exception:  # msgpack raises a zoo of types on garbage
            self.misses += 1
            return None
        self.hits += 1
        return err, result

    def close(self) -> None:
        self.map.close()
