"""The daemon's one way into CephFS: the only module that imports ``cephfs``.

Everything else in the daemon gets ``cephfs.LibCephFS`` instances and error
translation from a :class:`CephBackend`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import time
from typing import Any, Callable

_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

try:
    import cephfs
except ImportError:  # Debian's python3-cephfs lives outside a virtualenv's path
    if _DIST_PACKAGES not in sys.path:
        sys.path.append(_DIST_PACKAGES)
    try:
        import cephfs
    except ImportError as exc:
        raise ImportError(
            "libcephfsd needs Debian's python3-cephfs (apt-get install python3-cephfs); "
            f"it was not found in {_DIST_PACKAGES}") from exc


log = logging.getLogger(__name__)

# The binding returns times as naive datetimes from fromtimestamp(seconds) in
# the process's time zone.  Pinned to UTC, the daemon inverts them exactly
# (no DST folds) and sends plain seconds; each client rebuilds datetimes in
# its own zone, as the binding would have in that client's process.
os.environ["TZ"] = "UTC"
time.tzset()


#: Options whose value the daemon keeps at its own (the defaults of a fresh
#: instance) for every mount: where it loads code from, which messenger it
#: runs (``ms_type = bogus`` trips a ceph_assert in 16.2.15), and the debug
#: switches built to kill, stall or fail a process on purpose.
DAEMON_OWNED = (
    "plugin_dir", "erasure_code_dir", "crash_dir",
    "ms_type", "ms_public_type", "ms_cluster_type", "ms_async_rdma_type",
    "ms_die_on_bad_msg", "ms_die_on_bug", "ms_die_on_old_message",
    "ms_die_on_skipped_message", "ms_die_on_unhandled_msg",
    "ms_inject_delay_max", "ms_inject_delay_probability", "ms_inject_delay_type",
    "ms_inject_internal_delays", "ms_inject_socket_failures",
    "client_debug_inject_tick_delay", "client_inject_fixed_oldest_tid",
    "client_inject_release_failure", "objecter_debug_inject_relock_delay",
    "objecter_inject_no_watch_ping", "heartbeat_inject_failure", "inject_early_sigterm",
    "debug_asok_assert_abort", "debug_asserts_on_shutdown", "lockdep",
    "lockdep_force_backtrace",
)

#: libcephfs gathers debug entries up to level 5 in memory by default, for a
#: crash dump, and wakes its log thread for each: in the daemon, whose calls
#: arrive one by one with idle gaps between them, that wake-up cost ~40 us
#: on every stat (measured, 16.2.15).  The daemon's mounts log to no file
#: anyway (see mounts.forced_options).
QUIET_LOGS = {"debug_client": "0/0", "debug_objectcacher": "0/0", "debug_objecter": "0/0"}


class CephBackend:
    """Creates libcephfs instances and translates their errors."""

    def __init__(self, object_cache: int | None = None) -> None:
        probe = cephfs.LibCephFS()
        #: (major, minor, extra) of the libcephfs this daemon runs.
        self.version: tuple[int, int, int] = probe.version()
        #: This daemon's own values of the options in DAEMON_OWNED that this
        #: libcephfs has.
        self.defaults = {name: value for name in DAEMON_OWNED
                         if (value := probe.conf_get(name)) is not None}
        #: libcephfs's own object cache size and dirty limit (bytes, as text).
        self._oc_defaults = (probe.conf_get("client_oc_size"),
                             probe.conf_get("client_oc_max_dirty"))
        #: What a shared mount's object cache holds unless its client's
        #: configuration sizes it (None: libcephfs's default).
        self.object_cache = object_cache
        self.destroy(probe)

    def __repr__(self) -> str:
        return f"<CephBackend libcephfs {'.'.join(map(str, self.version))}>"

    def new_instance(self, auth_id: bytes | None) -> Any:
        """An unmounted libcephfs instance in state 'configuring', reading no config file.

        Its in-memory debug log starts off (QUIET_LOGS); a client's config
        file or conf_set may still turn it on.
        """
        fs = cephfs.LibCephFS(auth_id=auth_id)
        for option, value in QUIET_LOGS.items():
            fs.conf_set(option, value)
        return fs

    def size_object_cache(self, fs: Any) -> None:
        """Give an instance about to be mounted the daemon's object cache size.

        libcephfs sizes its object cache for one process (200 MiB, of which
        100 may be dirty, in 16.2.15); a mount the daemon shares serves many.
        Sixteen processes reading 16 MiB files each through one 200 MiB cache
        evict each other's data and go to the OSDs on every pass (measured:
        0.18 of direct libcephfs; 0.3 with a cache that holds them).

        Only where its configuration left libcephfs's default: a size a client
        set (config file, conf_set, argv) is kept.  The dirty limit keeps
        libcephfs's ratio to the size, unless it too was set.
        """
        size = self.object_cache
        default_size, default_dirty = self._oc_defaults
        if size is None or not default_size or fs.conf_get("client_oc_size") != default_size:
            return
        fs.conf_set("client_oc_size", str(size))
        if default_dirty and fs.conf_get("client_oc_max_dirty") == default_dirty:
            fs.conf_set("client_oc_max_dirty", str(size * int(default_dirty) // int(default_size)))

    @staticmethod
    def destroy(fs: Any) -> None:
        """Free an instance in any state (unmounting it if mounted).

        The binding's shutdown() does nothing in state 'configuring', so a
        handle that was never initialised would leak (about 330 KiB, measured):
        ceph_shutdown() is valid on any created handle, so let it run.
        """
        if fs.state == "configuring":
            fs.state = "initialized"
        fs.shutdown()

    @staticmethod
    def error_of(exc: BaseException) -> tuple[int, str] | None:
        """(errno, message) for an exception the binding raised, None if not the binding's."""
        if isinstance(exc, cephfs.OSError):
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            return abs(exc.errno) or errno.EIO, str(message)
        if isinstance(exc, cephfs.LibCephFSStateError):
            return errno.ENOTCONN, str(exc)
        if isinstance(exc, cephfs.Error):
            return errno.EIO, str(exc)
        return None


# -- libcephfs invalidation callbacks ------------------------------------------------
#
# The binding exposes neither ceph_ll_register_callbacks nor its mount pointer.
# The pointer is the C field declared right after ``state`` in the binding's
# cdef class; it is found by looking for ``state``'s object address at the
# offsets a Cython object can have there, then confirmed by asking libcephfs
# for the instance id through it.  Anything else: no callbacks (the TTL still
# bounds what other clients change).

class _Vino(ctypes.Structure):
    _fields_ = [("ino", ctypes.c_uint64), ("snapid", ctypes.c_uint64)]


_INO_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, _Vino, ctypes.c_int64, ctypes.c_int64)
_DENTRY_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, _Vino, _Vino, ctypes.c_void_p,
                              ctypes.c_size_t)


class _CallbackArgs(ctypes.Structure):
    # struct ceph_client_callback_args of the installed libcephfs (16.2.15
    # ships the trailing ino_release_cb; unused members stay NULL).
    _fields_ = [("handle", ctypes.c_void_p), ("ino_cb", _INO_CB), ("dentry_cb", _DENTRY_CB),
                ("switch_intr_cb", ctypes.c_void_p), ("remount_cb", ctypes.c_void_p),
                ("umask_cb", ctypes.c_void_p), ("ino_release_cb", ctypes.c_void_p)]


_libcephfs: Any = None


def _lib() -> Any:
    global _libcephfs
    if _libcephfs is None:
        lib = ctypes.CDLL("libcephfs.so.2")
        lib.ceph_get_instance_id.argtypes = [ctypes.c_void_p]
        lib.ceph_get_instance_id.restype = ctypes.c_uint64
        lib.ceph_ll_register_callbacks.argtypes = [ctypes.c_void_p,
                                                   ctypes.POINTER(_CallbackArgs)]
        lib.ceph_ll_register_callbacks.restype = None
        # int ceph_read/ceph_write(cmount, fd, buf, int64 size, int64 offset)
        io_args = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64]
        for name in ("ceph_read", "ceph_write"):
            getattr(lib, name).argtypes = io_args
            getattr(lib, name).restype = ctypes.c_int
        _libcephfs = lib
    return _libcephfs


def mount_pointer(fs: Any) -> int | None:
    """The ``struct ceph_mount_info *`` of a mounted binding object, or None."""
    base, state = id(fs), id(fs.state)
    size = type(fs).__basicsize__
    word = ctypes.sizeof(ctypes.c_void_p)
    # PyObject_HEAD is two words; a Cython vtable pointer may follow.
    for offset in (2 * word, 3 * word):
        if offset + 2 * word > size:
            continue
        if ctypes.c_void_p.from_address(base + offset).value != state:
            continue
        pointer = ctypes.c_void_p.from_address(base + offset + word).value
        if pointer and _lib().ceph_get_instance_id(pointer) == fs.get_instance_id():
            return pointer
    return None


def raw_read(pointer: int, fd: int, address: int, length: int, offset: int) -> int:
    """ceph_read into memory at *address*: bytes read, or -errno.  Releases the GIL."""
    return _lib().ceph_read(pointer, fd, address, length, offset)


def raw_write(pointer: int, fd: int, address: int, length: int, offset: int) -> int:
    """ceph_write from memory at *address*: bytes written, or -errno.  Releases the GIL."""
    return _lib().ceph_write(pointer, fd, address, length, offset)


class InvalidationWatch:
    """Callbacks registered on one mount; keep it alive as long as the mount."""

    def __init__(self, on_inode: Callable[[int], None],
                 on_dentry: Callable[[int, int, bytes], None]):
        def ino_cb(_handle: Any, vino: _Vino, _off: int, _len: int) -> None:
            try:
                on_inode(vino.ino)
            except Exception:  # never raise into libcephfs
                log.exception("inode invalidation callback failed")

        def dentry_cb(_handle: Any, dirino: _Vino, ino: _Vino, name: int, length: int) -> None:
            try:
                on_dentry(dirino.ino, ino.ino, ctypes.string_at(name, length))
            except Exception:
                log.exception("dentry invalidation callback failed")

        self._ino_cb = _INO_CB(ino_cb)
        self._dentry_cb = _DENTRY_CB(dentry_cb)
        self.args = _CallbackArgs(None, self._ino_cb, self._dentry_cb, None, None, None, None)


def find_mount_pointer(fs: Any) -> int:
    """mount_pointer() of a mounted instance, or 0 (logged) when it cannot be
    found safely: then the mount has no invalidation callbacks (the cache TTL
    bounds remote changes) and no data windows (data goes inline)."""
    try:
        pointer = mount_pointer(fs)
    except OSError as exc:
        log.warning("cannot load libcephfs through ctypes: %s", exc)
        return 0
    if pointer is None:
        log.warning("cannot find the libcephfs mount behind the cephfs binding object: no "
                    "invalidation callbacks (changes by other CephFS clients are bounded by "
                    "the cache TTL only) and no data windows")
        return 0
    return pointer


def watch_invalidations(pointer: int, on_inode: Callable[[int], None],
                        on_dentry: Callable[[int, int, bytes], None]) -> InvalidationWatch:
    """Register libcephfs's invalidation callbacks on the mount at *pointer*
    (find_mount_pointer).  Keep the registration until the mount is shut down."""
    watch = InvalidationWatch(on_inode, on_dentry)
    _lib().ceph_ll_register_callbacks(pointer, ctypes.byref(watch.args))
    return watch
