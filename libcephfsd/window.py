"""Shared memory for file data: data windows and read buffers.

A client granted ``DATA_WINDOW`` gets, on request, a memfd of the daemon's
``max_data`` bytes mapped by both processes.  ``READ_WINDOW`` has libcephfs
read straight into it and ``WRITE_WINDOW`` write straight from it (through
``ceph_read``/``ceph_write`` on the mount pointer, see backend), so large
I/O costs one copy in the client and none in the daemon or the kernel.

Resident memory stays bounded: a window's pages are kept between calls only
while all kept windows fit in the pool's cap; past it, they are freed
(MADV_REMOVE) after each call, and the next call faults them in again.
After a write the daemon frees them itself; after a read the data must stay
until the client has copied it out, so the reply tells the client to free
them (a client that does not holds at most its one window).  Each session
has its own window, so no client ever sees another's data.  A window is used
by its session's connection thread only.

A client granted ``READ_BUFFERS`` may also ask for read buffers (BufferPool):
memfds that ``READ_BUFFER`` reads into and that the client hands out as they
are, so a large read costs no copy in the client either.  They are mapped
for their session's life and capped in total (``--max-read-buffers``).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import threading


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_shared(fd: int, size: int) -> int:
    """mmap(2) *size* bytes of *fd*, shared and read-write; the address.

    Unlike mmap.mmap, this keeps no duplicate of *fd* (the caller may close
    it at once) and is undone only by unmap(), never by garbage collection.
    """
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return address


def unmap(address: int, size: int) -> None:
    _libc.munmap(address, size)


class WindowPool:
    """Accounting of the windows' resident bytes across sessions (thread-safe)."""

    def __init__(self, cap: int):
        #: Resident window bytes kept between calls, at most.
        self.cap = cap
        self.resident = 0
        self.windows = 0
        self.released = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<WindowPool windows={self.windows} resident={self.resident} "
                f"cap={self.cap} released={self.released}>")

    def describe(self) -> dict:
        return {"windows": self.windows, "resident": self.resident, "cap": self.cap,
                "released": self.released}

    def open(self, size: int) -> Window:
        window = Window(self, size)
        with self._lock:
            self.windows += 1
        return window

    def _warmed(self, window: Window) -> bool:
        """Count *window*'s pages as resident; False if they must be freed now."""
        with self._lock:
            if self.resident + window.size <= self.cap:
                self.resident += window.size
                return True
            self.released += 1
            return False

    def _cooled(self, window: Window, was_warm: bool) -> None:
        with self._lock:
            if was_warm:
                self.resident -= window.size
            self.windows -= 1


class Window:
    """One session's shared buffer."""

    __slots__ = ("pool", "size", "fd", "address", "warm")

    def __init__(self, pool: WindowPool, size: int):
        self.pool = pool
        self.size = size
        #: Kept: a second WINDOW sends it again.
        self.fd = os.memfd_create("libcephfsd-window", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            # Not mmap.mmap, which would keep a second descriptor per session.
            self.address = map_shared(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise
        #: Its pages are counted in the pool's resident bytes.
        self.warm = False

    def __repr__(self) -> str:
        return f"<Window fd={self.fd} size={self.size} {'warm' if self.warm else 'cold'}>"

    def keep(self) -> bool:
        """After a call: may the pages stay?  True while the pool has room."""
        if not self.warm and self.pool._warmed(self):
            self.warm = True
        return self.warm

    def release(self, at: int, length: int) -> None:
        """Free the whole pages of [at, at + length) now.  Only the request's
        own bytes: the client may already be filling the rest of the window
        with its next piece."""
        start = -(-at // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (at + length) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and _libc.madvise(self.address + start, end - start,
                                         mmap.MADV_REMOVE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"madvise: {os.strerror(err)}")

    def close(self) -> None:
        was_warm, self.warm = self.warm, False
        unmap(self.address, self.size)
        os.close(self.fd)
        self.pool._cooled(self, was_warm)


class BufferPool:
    """Read buffers (READ_BUFFERS) of all sessions: their bytes, at most *cap* (thread-safe).

    A read buffer is a memfd a client asked for, mapped by the daemon for the
    session's life (mapping one per call costs more than the read: populating
    16 MiB of page tables takes over a millisecond here).  Its bytes count
    until the client frees it or its session ends.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.bytes = 0
        self.buffers = 0
        self.refused = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"<BufferPool buffers={self.buffers} bytes={self.bytes} cap={self.cap} "
                f"refused={self.refused}>")

    def describe(self) -> dict:
        return {"buffers": self.buffers, "bytes": self.bytes, "cap": self.cap,
                "refused": self.refused}

    def open(self, size: int) -> ReadBuffer | None:
        """A new buffer of *size* bytes (whole pages), or None past the cap."""
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        with self._lock:
            if self.bytes + size > self.cap:
                self.refused += 1
                return None
            self.bytes += size
            self.buffers += 1
        try:
            return ReadBuffer(self, size)
        except BaseException:
            self._closed(size)
            raise

    def _closed(self, size: int) -> None:
        with self._lock:
            self.bytes -= size
            self.buffers -= 1


class ReadBuffer:
    """One read buffer: a memfd sealed at its size, so the client can neither
    shrink it under a read (which would fault the daemon) nor grow it."""

    __slots__ = ("pool", "size", "fd", "address")

    def __init__(self, pool: BufferPool, size: int):
        self.pool = pool
        self.size = size
        self.fd = os.memfd_create("libcephfsd-read-buffer",
                                  os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            # Not mmap.mmap: it would keep a second descriptor per buffer.
            self.address = map_shared(self.fd, size)
        except OSError:
            os.close(self.fd)
            raise

    def __repr__(self) -> str:
        return f"<ReadBuffer fd={self.fd} size={self.size}>"

    def detach_fd(self) -> int:
        """The memfd's descriptor, now the caller's to close (the mapping stays)."""
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        unmap(self.address, self.size)
        if self.fd >= 0:
            os.close(self.fd)
        self.pool._closed(self.size)
