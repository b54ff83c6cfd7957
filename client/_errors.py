"""Exceptions: the ``cephfs`` binding's classes, plus what a proxy adds.

Applications catch these exactly as they would the binding's: same names,
same hierarchy, same errno mapping, same ``errno``/``strerror``/``str()``.
The proxy's own failures fit into the same tree::

    Error
    ├── LibCephFSStateError          call not valid in this state (e.g. not mounted)
    ├── OSError(errno, strerror)     the filesystem said no
    │   ├── PermissionError (EPERM), PermissionDenied (EACCES)
    │   ├── ObjectNotFound (ENOENT), ObjectExists (EEXIST), ObjectNotEmpty (ENOTEMPTY)
    │   ├── NotDirectory (ENOTDIR), NoData (ENODATA), NoSpace (ENOSPC)
    │   ├── DiskQuotaExceeded (EDQUOT), InvalidValue (EINVAL), OutOfRange (ERANGE)
    │   ├── OperationNotSupported (EOPNOTSUPP), WouldBlock (EAGAIN), IOError (EIO)
    │   └── DaemonUnavailable (ENOTCONN)  no daemon answers, or it went away
    └── ProtocolError                the daemon broke the protocol (or we did)

``DaemonUnavailable`` is an ``OSError`` with errno ENOTCONN, so code that maps
``e.errno`` to a return code (as Samba's VFS does) handles it unchanged.
"""

from __future__ import annotations

import errno as _errno
import os as _os


class Error(Exception):
    def get_error_code(self) -> int:
        return 1


class LibCephFSStateError(Error):
    pass


class OSError(Error):  # noqa: A001 - the binding's name
    def __init__(self, errno: int, strerror: str):
        super().__init__(errno, strerror)
        self.errno = errno
        self.strerror = "%s: %s" % (strerror, _os.strerror(errno))

    def __str__(self) -> str:
        return "{} [Errno {}]".format(self.strerror, self.errno)

    def get_error_code(self) -> int:
        return self.errno


class PermissionError(OSError):  # noqa: A001
    pass


class ObjectNotFound(OSError):
    pass


class NoData(OSError):
    pass


class ObjectExists(OSError):
    pass


class IOError(OSError):  # noqa: A001
    pass


class NoSpace(OSError):
    pass


class InvalidValue(OSError):
    pass


class OperationNotSupported(OSError):
    pass


class WouldBlock(OSError):
    pass


class OutOfRange(OSError):
    pass


class ObjectNotEmpty(OSError):
    pass


class NotDirectory(OSError):
    pass


class DiskQuotaExceeded(OSError):
    pass


class PermissionDenied(OSError):
    pass


class DaemonUnavailable(OSError):
    """No libcephfsd answers on the socket, or the connection to it was lost."""

    def __init__(self, message: str):
        super().__init__(_errno.ENOTCONN, message)


class ProtocolError(Error):
    """The daemon sent something this library does not understand."""


_ERRNO_TO_EXCEPTION: dict[int, type[OSError]] = {
    _errno.EPERM: PermissionError,
    _errno.ENOENT: ObjectNotFound,
    _errno.EIO: IOError,
    _errno.ENOSPC: NoSpace,
    _errno.EEXIST: ObjectExists,
    _errno.ENODATA: NoData,
    _errno.EINVAL: InvalidValue,
    _errno.EOPNOTSUPP: OperationNotSupported,
    _errno.ERANGE: OutOfRange,
    _errno.EWOULDBLOCK: WouldBlock,
    _errno.ENOTEMPTY: ObjectNotEmpty,
    _errno.ENOTDIR: NotDirectory,
    _errno.EDQUOT: DiskQuotaExceeded,
    _errno.EACCES: PermissionDenied,
}


def make_ex(ret: int, msg: str) -> OSError:
    """The exception the binding raises for return code *ret* (negative or positive)."""
    ret = abs(ret)
    return _ERRNO_TO_EXCEPTION.get(ret, OSError)(ret, msg)
