"""libcephfs_proxy: the cephfs binding's API, served by libcephfsd.

Use it instead of Debian's ``cephfs`` module; code written for ``cephfs``
runs unchanged with ``import libcephfs_proxy as cephfs``.  This process never
loads libcephfs: every call goes over a unix socket to the daemon, found at
``$LIBCEPHFSD_SOCKET`` or /run/libcephfsd.sock.
"""

from ._connection import DEFAULT_SOCKET, daemon_status, socket_path
from ._constants import (
    AT_STATX_DONT_SYNC,
    AT_STATX_FORCE_SYNC,
    AT_STATX_SYNC_AS_STAT,
    AT_STATX_SYNC_TYPE,
    AT_SYMLINK_NOFOLLOW,
    CEPH_SETATTR_ATIME,
    CEPH_SETATTR_BTIME,
    CEPH_SETATTR_CTIME,
    CEPH_SETATTR_GID,
    CEPH_SETATTR_MODE,
    CEPH_SETATTR_MTIME,
    CEPH_SETATTR_SIZE,
    CEPH_SETATTR_UID,
    CEPH_STATX_ATIME,
    CEPH_STATX_BASIC_STATS,
    CEPH_STATX_BLOCKS,
    CEPH_STATX_BTIME,
    CEPH_STATX_CTIME,
    CEPH_STATX_GID,
    CEPH_STATX_INO,
    CEPH_STATX_MODE,
    CEPH_STATX_MTIME,
    CEPH_STATX_NLINK,
    CEPH_STATX_RDEV,
    CEPH_STATX_SIZE,
    CEPH_STATX_UID,
    CEPH_STATX_VERSION,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_NO_HIDE_STALE,
    FALLOC_FL_PUNCH_HOLE,
)
from ._errors import (
    DaemonUnavailable,
    DiskQuotaExceeded,
    Error,
    InvalidValue,
    IOError,
    LibCephFSStateError,
    NoData,
    NoSpace,
    NotDirectory,
    ObjectExists,
    ObjectNotEmpty,
    ObjectNotFound,
    OperationNotSupported,
    OSError,
    OutOfRange,
    PermissionDenied,
    PermissionError,
    ProtocolError,
    WouldBlock,
)
from ._libcephfs import DirResult, LibCephFS
from ._types import DirEntry, StatResult, cstr, cstr_list, decode_cstr

__all__ = [
    # the binding's classes and helpers
    "LibCephFS", "DirResult", "DirEntry", "StatResult", "cstr", "cstr_list", "decode_cstr",
    # the binding's exceptions
    "Error", "LibCephFSStateError", "OSError", "PermissionError", "PermissionDenied",
    "ObjectNotFound", "NoData", "ObjectExists", "IOError", "NoSpace", "InvalidValue",
    "OperationNotSupported", "WouldBlock", "OutOfRange", "ObjectNotEmpty", "NotDirectory",
    "DiskQuotaExceeded",
    # what the proxy adds
    "DaemonUnavailable", "ProtocolError", "socket_path", "DEFAULT_SOCKET", "daemon_status",
    # the binding's constants
    "AT_SYMLINK_NOFOLLOW", "AT_STATX_SYNC_TYPE", "AT_STATX_SYNC_AS_STAT", "AT_STATX_FORCE_SYNC",
    "AT_STATX_DONT_SYNC", "CEPH_STATX_BASIC_STATS", "CEPH_STATX_MODE", "CEPH_STATX_NLINK",
    "CEPH_STATX_UID", "CEPH_STATX_GID", "CEPH_STATX_RDEV", "CEPH_STATX_ATIME", "CEPH_STATX_MTIME",
    "CEPH_STATX_CTIME", "CEPH_STATX_INO", "CEPH_STATX_SIZE", "CEPH_STATX_BLOCKS",
    "CEPH_STATX_BTIME", "CEPH_STATX_VERSION", "FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE",
    "FALLOC_FL_NO_HIDE_STALE", "CEPH_SETATTR_MODE", "CEPH_SETATTR_UID", "CEPH_SETATTR_GID",
    "CEPH_SETATTR_MTIME", "CEPH_SETATTR_ATIME", "CEPH_SETATTR_SIZE", "CEPH_SETATTR_CTIME",
    "CEPH_SETATTR_BTIME",
]
