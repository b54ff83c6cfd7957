"""Read buffers: ``bytes`` results that libcephfs in the daemon wrote in place.

A read through the data window costs two copies of the data: libcephfs's
into the window and the client's out of it into the ``bytes`` returned.
Large reads are bound by memory bandwidth (two concurrent copies take as
long as two in a row on the machines measured), so that second copy halves
their speed against the binding, which makes one.

A read buffer removes it.  It is a memfd the daemon made, sealed at its size
and mapped by both processes, holding a complete CPython ``bytes`` object:
its header on the last 32 bytes of the first page, its data from the second
page on.  READ_BUFFER has libcephfs read straight into the data, and the
client returns that very object.  The object belongs to the buffer, never to
CPython's allocator: the buffer holds ``_ANCHOR`` references to it that are
never given back, so it can never be deallocated (which would hand memory
malloc never gave to free()).

A buffer is reused only when its object is referenced by nobody but the
buffer (its reference count says so): then nothing anyone can reach
changes when the next read overwrites it, which is the rule CPython itself
follows when it resizes a bytes object in place.  Its length is set to what
was read and its cached hash is reset each time.  A buffer still referenced
is not reused; a connection holds at most ``PER_CONNECTION`` of them and a
process at most ``budget()`` bytes of them, and a read that finds none free
goes through the window.

Only CPython builds whose bytes layout is the one described here use read
buffers (``supported()``); a fork marks every buffer so that the parent never
writes into one the child can still see.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from typing import cast

from libcephfsd.window import map_shared, unmap

PAGE = mmap.PAGESIZE
#: The bytes object's header: ob_refcnt, ob_type, ob_size, ob_shash.
_HEADER = 32
#: References the buffer itself holds on its object and never gives back.
_ANCHOR = 1 << 16
#: Reads this long and longer use a read buffer.
MIN_READ = 1 << 20
#: Buffer capacities are whole multiples of this.
_GRAIN = 1 << 20
#: Read buffers one connection keeps at most.
PER_CONNECTION = 2
#: A free buffer serves reads down to 1/SLACK of its capacity.
SLACK = 4

_lock = threading.Lock()
_used = 0
#: Buffers of closed connections whose objects were still referenced.
_orphans: list[ReadBuffer] = []


def supported() -> bool:
    """Whether this interpreter's bytes objects are laid out as read buffers build them."""
    return (sys.implementation.name == "cpython" and bytes.__basicsize__ == _HEADER + 1
            and bytes.__itemsize__ == 1 and ctypes.sizeof(ctypes.c_void_p) == 8)


def budget() -> int:
    """Bytes of read buffers a process may hold: $LIBCEPHFS_PROXY_READ_BUFFERS
    (a byte count; 0 turns them off), default 64 MiB."""
    text = os.environ.get("LIBCEPHFS_PROXY_READ_BUFFERS", "").strip()
    try:
        return max(0, int(text)) if text else 64 << 20
    except ValueError:
        return 64 << 20


def capacity_for(length: int) -> int:
    return -(-length // _GRAIN) * _GRAIN


def buffer_size(capacity: int) -> int:
    """The memfd size for *capacity* data bytes: the header page, the data, its NUL."""
    return PAGE + -(-(capacity + 1) // PAGE) * PAGE


def reserve(size: int) -> bool:
    """Count *size* more bytes against the process's budget, if they fit."""
    global _used
    _sweep_orphans()
    with _lock:
        if _used + size > budget():
            return False
        _used += size
        return True


def unreserve(size: int) -> None:
    global _used
    with _lock:
        _used -= size


def orphan(buffer: ReadBuffer) -> None:
    """Keep *buffer* mapped until its object is free, then unmap it."""
    with _lock:
        _orphans.append(buffer)


def _sweep_orphans() -> None:
    with _lock:
        free = [b for b in _orphans if b.free()]
        for buffer in free:
            _orphans.remove(buffer)
    for buffer in free:
        buffer.unmap()


class ReadBuffer:
    """One read buffer on the client's side; its connection's window_lock guards it."""

    __slots__ = ("_base", "_header", "_obj", "bid", "capacity", "data", "forked", "size")

    def __init__(self, bid: int, fd: int, size: int):
        self.bid = bid
        self.size = size
        self.capacity = size - PAGE - 1
        #: Set by a fork: the child may hold its object, so it is never reused.
        self.forked = False
        # Mapped with libc, not an mmap object: the mapping must outlive every
        # reference to the object in it, even at interpreter exit, when
        # objects are torn down in no particular order.  Only unmap() undoes it.
        base = map_shared(fd, size)
        self._base = base
        self._header = base + PAGE - _HEADER
        #: Where the daemon writes the data (byte PAGE of the memfd).
        self.data = base + PAGE
        ctypes.c_ssize_t.from_address(self._header).value = _ANCHOR
        ctypes.c_void_p.from_address(self._header + 8).value = id(bytes)
        self._set_length(0)
        slot = ctypes.c_void_p(self._header)
        self._obj: bytes | None = cast(
            bytes, ctypes.py_object.from_address(ctypes.addressof(slot)).value)
        if type(self._obj) is not bytes or len(self._obj) != 0 or not self.free():
            raise RuntimeError("this interpreter's bytes objects are not laid out as expected")

    def __repr__(self) -> str:
        return (f"<ReadBuffer {self.bid} capacity={self.capacity} "
                f"{'free' if self.free() else 'in use'}{' forked' if self.forked else ''}>")

    def holds(self, obj: object) -> bool:
        """Whether *obj* is this buffer's bytes object."""
        return id(obj) == self._header

    def free(self) -> bool:
        """Nobody but this buffer references its object."""
        return (self._obj is not None
                and ctypes.c_ssize_t.from_address(self._header).value == _ANCHOR + 1)

    def _set_length(self, n: int) -> None:
        ctypes.c_ssize_t.from_address(self._header + 16).value = n
        ctypes.c_ssize_t.from_address(self._header + 24).value = -1     # no cached hash
        ctypes.c_char.from_address(self.data + n).value = b"\0"

    def hand_out(self, n: int) -> bytes:
        """The object, now the *n* bytes the daemon just read (call while free)."""
        self._set_length(n)
        obj = self._obj
        assert obj is not None
        return obj

    def unmap(self) -> None:
        """Give the memory back (only while free: nobody can reach it then)."""
        self._obj = None
        unmap(self._base, self.size)
        unreserve(self.size)
