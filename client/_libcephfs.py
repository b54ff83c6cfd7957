"""``LibCephFS``: the cephfs binding's class, served by libcephfsd.

Every public method of the Pacific binding with the same parameters,
defaults, argument checks (same TypeError texts, same order), state machine,
return types and exceptions.  Arguments are checked here, then the call goes
to the daemon as one request; the daemon resolves relative paths against this
session's own cwd.  Reads and writes larger than the daemon's ``max_data``
are split into several requests.
"""

from __future__ import annotations

import errno as _errno
import os
import stat
import time
from collections import deque
from typing import Any, Literal

from libcephfsd.protocol import MAX_BODY, PATH_MAX, Op

from . import _constants as C
from . import _readbuf
from ._connection import Connection, ErrorReply, cache_settings
from .cache import MISS
from ._errors import (Error, LibCephFSStateError, OperationNotSupported, ProtocolError,
                      make_ex)
from ._types import DirEntry, FileData, Listing, cstr, cstr_list, stat_result, statx_result

#: Entries asked for per LISTDIR or READDIR: the daemon's most (READDIR_MAX_BATCH),
#: so a directory of a thousand entries is listed, and cached, in one round trip
#: (256 took five round trips and was never cached: readdir of 1,000 entries,
#: 16 clients with the cache, went from 0.26 to 3.25 times direct).
READDIR_BATCH = 1024
#: Reads and writes at least this large use the data window (DATA_WINDOW):
#: below it, the socket's copies cost less than the extra round trip's share.
WINDOW_MIN = 64 << 10
_CEPH_CONF_DEFAULT = "/etc/ceph/$cluster.conf, $home/.ceph/$cluster.conf, $cluster.conf"


def _same(value: Any) -> Any:
    return value


def _cint(value: Any) -> int:
    """Cython's conversion for a parameter typed ``int``."""
    if isinstance(value, int):
        return int(value)
    raise TypeError("an integer is required")


#: statx fields the binding returns for each mask bit, in its order, with the
#: StatResult index holding the same value (checked against the binding).
_STATX_FIELDS = ((C.CEPH_STATX_MODE, "mode", 2), (C.CEPH_STATX_NLINK, "nlink", 3),
                 (C.CEPH_STATX_UID, "uid", 4), (C.CEPH_STATX_GID, "gid", 5),
                 (C.CEPH_STATX_RDEV, "rdev", 6), (C.CEPH_STATX_ATIME, "atime", 10),
                 (C.CEPH_STATX_MTIME, "mtime", 11), (C.CEPH_STATX_CTIME, "ctime", 12),
                 (C.CEPH_STATX_INO, "ino", 1), (C.CEPH_STATX_SIZE, "size", 7),
                 (C.CEPH_STATX_BLOCKS, "blocks", 9))
#: statx flags under which a cached stat (or lstat) is the answer.
_STATX_FROM_STAT_FLAGS = C.AT_SYMLINK_NOFOLLOW | C.AT_STATX_DONT_SYNC


def _not_a_link(value: Any) -> bool:
    """True for an lstat answer that is also the stat answer: not a symlink,
    or an error (which a stat of the same name meets too)."""
    return type(value) is ErrorReply or not stat.S_ISLNK(value.st_mode)


class DirResult:
    """An open directory of a LibCephFS, read in batches.

    ``telldir()`` is answered locally: every entry carries the daemon's
    position after it.  A directory the daemon listed whole in LISTDIR has
    no handle open in the daemon (``handle`` is -1): it is read from that
    listing, and rewinding asks for the directory's current listing again
    (from the cache when it holds one, which the daemon keeps coherent).
    """

    def __init__(self, lib: LibCephFS, handle: int, pos: int, entries: tuple = (),
                 eof: bool = False, path: bytes | None = None):
        self.lib = lib
        self.handle: int | None = handle
        self._pos = pos
        self._entries: deque = deque(entries)
        self._eof = eof
        #: (absolute path, position at the start, the whole listing) of a local one
        self._listing: tuple[bytes, int, tuple] | None = None
        if handle == 0:
            assert path is not None and eof
            self.handle = _LOCAL
            self._listing = (path, pos, entries)

    def __repr__(self) -> str:
        return f"<DirResult handle={self.handle} buffered={len(self._entries)}>"

    def __del__(self) -> None:
        if self.handle is not None and self.handle != _LOCAL:
            # Finalizers may run inside another call on the same connection:
            # leave the close to the next opendir().
            self.lib._orphan_dirs.append(self.handle)

    def __enter__(self) -> DirResult:
        if not self.handle:
            raise make_ex(_errno.EBADF, "dir is not open")
        self.lib.require_state("mounted")
        self._rewind()
        return self

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> Literal[False]:
        self.close()
        return False

    def readdir(self) -> DirEntry | None:
        self.lib.require_state("mounted")
        if not self.handle:
            raise make_ex(_errno.EBADF, "dir is not open")
        entries = self._entries
        if not entries and not self._eof:
            (batch, self._eof), _ = self.lib._call(Op.READDIR, (self.handle, READDIR_BATCH),
                                                   "readdir failed")
            entries.extend(batch)
        if not entries:
            return None
        d_ino, d_off, d_reclen, d_type, d_name, self._pos = entries.popleft()
        return DirEntry(d_ino, d_off, d_reclen, d_type, d_name)

    def close(self) -> None:
        if self.handle:
            self.lib.require_state("mounted")
            handle, self.handle = self.handle, None
            self._entries.clear()
            if handle != _LOCAL:
                self.lib._call(Op.CLOSEDIR, (handle,), "closedir failed")

    def rewinddir(self) -> None:
        if not self.handle:
            raise make_ex(_errno.EBADF, "dir is not open")
        self.lib.require_state("mounted")
        self._rewind()

    def _rewind(self) -> None:
        if self._listing is not None:
            self._adopt(*self.lib._list(self._listing[0], self._listing[0]))
            return
        self._pos, _ = self.lib._call(Op.REWINDDIR, (self.handle,), "rewinddir failed")
        self._entries.clear()
        self._eof = False

    def _adopt(self, handle: int, pos: int, entries: tuple, eof: bool) -> None:
        """Read on from a fresh LISTDIR answer (a handle of its own if it has one)."""
        self._pos, self._entries, self._eof = pos, deque(entries), eof
        if handle:
            self.handle, self._listing = handle, None
        else:
            assert self._listing is not None
            self._listing = (self._listing[0], pos, entries)

    def telldir(self) -> int:
        if not self.handle:
            raise make_ex(_errno.EBADF, "dir is not open")
        self.lib.require_state("mounted")
        return self._pos

    def seekdir(self, offset: int) -> None:
        if not self.handle:
            raise make_ex(_errno.EBADF, "dir is not open")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        self.lib.require_state("mounted")
        if self._listing is not None:
            path, start, listing = self._listing
            if offset == start:
                self._pos, self._entries, self._eof = start, deque(listing), True
                return
            for i, entry in enumerate(listing):
                if entry[5] == offset:      # a position telldir gave
                    self._pos, self._entries, self._eof = offset, deque(listing[i + 1:]), True
                    return
            # Any other position is libcephfs's to interpret: open the
            # directory for real and seek there.
            (handle, _), _ = self.lib._call(Op.OPENDIR, (path,), "seekdir failed")
            self.handle, self._listing = handle, None
        self.lib._call(Op.SEEKDIR, (self.handle, offset), "seekdir failed")
        self._pos = offset
        self._entries.clear()
        self._eof = False


#: DirResult.handle of a directory listed whole, with no handle in the daemon.
_LOCAL = -1


def _listing(wire: Any) -> Listing:
    try:
        handle, pos, entries, eof = wire
        listing = Listing(int(handle), int(pos), tuple(tuple(e) for e in entries), bool(eof))
        if listing.handle < 0 or (listing.handle == 0 and not listing.eof) or any(
                len(e) != 6 for e in listing.entries):
            raise ValueError(wire)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"libcephfsd sent a malformed LISTDIR answer: {exc}") from None
    return listing


def _check_dir(handle: Any) -> DirResult:
    if not isinstance(handle, DirResult):
        raise TypeError("Argument 'handle' has incorrect type (expected "
                        f"libcephfs_proxy.DirResult, got {type(handle).__name__})")
    return handle


def _utime_times(times: Any, kind: Any, what: str) -> list:
    if times:
        if not isinstance(times, tuple):
            raise TypeError("times must be a tuple")
        if not isinstance(times[0], kind):
            raise TypeError(f"atime must be {what}")
        if not isinstance(times[1], kind):
            raise TypeError(f"mtime must be {what}")
        atime, mtime = times[0], times[1]
        return [atime, mtime] if kind is int else [float(atime), float(mtime)]
    now = int(time.time()) if kind is int else time.time()
    return [now, now]


def _stx_out(dict_stx: dict, mask: int) -> dict:
    """The fields of *dict_stx* selected by *mask*, as the binding reads them."""
    out: dict[str, Any] = {}
    for bit, key in ((C.CEPH_SETATTR_MODE, "mode"), (C.CEPH_SETATTR_UID, "uid"),
                     (C.CEPH_SETATTR_GID, "gid"), (C.CEPH_SETATTR_SIZE, "size")):
        if mask & bit:
            out[key] = _cint(dict_stx[key])
    for bit, key in ((C.CEPH_SETATTR_MTIME, "mtime"), (C.CEPH_SETATTR_ATIME, "atime"),
                     (C.CEPH_SETATTR_CTIME, "ctime"), (C.CEPH_SETATTR_BTIME, "btime")):
        if mask & bit:
            out[key] = dict_stx[key].timestamp()
    return out


def _open_flags(flags: Any) -> int:
    if isinstance(flags, str):
        if flags == "":
            return os.O_RDONLY
        cephfs_flags = 0
        access_flags = 0
        for c in flags:
            if c == "r":
                access_flags = 1
            elif c == "w":
                access_flags = 2
                cephfs_flags |= os.O_TRUNC | os.O_CREAT
            elif access_flags > 0 and c == "+":
                access_flags = 3
            else:
                raise make_ex(_errno.EOPNOTSUPP, "open flags doesn't support %s" % c)
        if access_flags == 1:
            cephfs_flags |= os.O_RDONLY
        elif access_flags == 2:
            cephfs_flags |= os.O_WRONLY
        else:
            cephfs_flags |= os.O_RDWR
        return cephfs_flags
    if isinstance(flags, int):
        return flags
    raise TypeError("flags must be a string or an integer")


def _read_conf_file(conffile: bytes | None) -> tuple[str, bytes]:
    """(path, content) of the config file libcephfs would read, read with our own rights.

    Same search as ceph_conf_read_file: a comma/space separated list (by
    default $CEPH_CONF or the standard places), first existing file wins.
    """
    if conffile is None:
        text = os.environ.get("CEPH_CONF") or _CEPH_CONF_DEFAULT
    else:
        text = conffile.decode("utf-8", "surrogateescape")
    home = os.environ.get("HOME", "")
    for candidate in text.replace(",", " ").split():
        path = candidate.replace("$cluster", "ceph").replace("${cluster}", "ceph")
        path = path.replace("$home", home).replace("${home}", home)
        if "$" in path:
            continue  # daemon-only metavariables ($data_dir, ...)
        try:
            with open(path, "rb") as f:
                content = f.read(MAX_BODY // 2 + 1)
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise make_ex(_errno.EISDIR, "error calling conf_read_file") from None
        except PermissionError:
            raise make_ex(_errno.EACCES, "error calling conf_read_file") from None
        if len(content) > MAX_BODY // 2:
            raise make_ex(_errno.EFBIG, "error calling conf_read_file")
        return path, content
    raise make_ex(_errno.ENOENT, "error calling conf_read_file")


class LibCephFS:
    """libcephfs python wrapper, served by libcephfsd."""

    #: "uninitialized", "configuring", "initialized", "mounted" or "shutdown".
    state = "uninitialized"
    NO_CONF_FILE = -1
    "special value that indicates no conffile should be read when creating a mount handle"
    DEFAULT_CONF_FILES = -2
    "special value that indicates the default conffiles should be read when creating a mount handle"

    def __init__(self, conf: dict | None = None, conffile: Any = None, auth_id: Any = None,
                 rados_inst: Any = None):
        self.state = "uninitialized"
        self._conn: Connection | None = None
        self._orphan_dirs: list[int] = []
        #: fds opened read-only (and neither locked nor lazy): closed without waiting.
        self._readonly_fds: set[int] = set()
        #: The session's cwd as the daemon resolved it (for cache keys).
        self._cwd = b"/"
        if rados_inst is not None:
            if auth_id is not None or conffile is not None or conf is not None:
                raise make_ex(_errno.EINVAL,
                              "May not pass RADOS instance as well as other configuration")
            self.create_with_rados(rados_inst)
        else:
            self.create(conf, conffile, auth_id)

    def __repr__(self) -> str:
        return f"<libcephfs_proxy.LibCephFS state={self.state} {self._conn!r}>"

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()

    def __enter__(self) -> LibCephFS:
        self.mount()
        return self

    def __exit__(self, type_: Any, value: Any, traceback: Any) -> Literal[False]:
        self.shutdown()
        return False

    # -- plumbing -----------------------------------------------------------------

    def require_state(self, *args: str) -> None:
        if self.state in args:
            return
        raise LibCephFSStateError("You cannot perform that operation on a "
                                  "CephFS object in state %s." % (self.state))

    def _error(self, exc: ErrorReply, err: Any) -> Exception:
        message = (err() if callable(err) else err) if exc.from_cephfs else exc.message
        return make_ex(exc.errno, message)

    def _abs(self, path: bytes) -> bytes:
        """*path* joined to the session's cwd, as the daemon joins it."""
        if path[:1] == b"/":
            return path
        cwd = self._cwd
        return (cwd if cwd != b"/" else b"") + b"/" + path

    def _cached(self, key: Any, op: Op, args: tuple, convert: Any, err: Any) -> Any:
        """A cacheable call: from the session's cache when it holds a live answer."""
        conn = self._conn
        if conn is None or conn.cache is None:
            result, _ = self._call(op, args, err)
            return convert(result)
        value = conn.lookup(key)
        if value is MISS:
            try:
                return conn.fetch(op, args, key, convert)
            except ErrorReply as exc:
                raise self._error(exc, err) from None
        if type(value) is ErrorReply:
            raise self._error(value, err)
        return value

    def _live_conn(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise LibCephFSStateError("You cannot perform that operation on a "
                                      "CephFS object in state %s." % (self.state))
        return conn

    def _call(self, op: Op, args: tuple | list, err: Any,
              data: bytes | bytearray | memoryview = b"") -> tuple[Any, Any]:
        """One request.  *err* words a libcephfs error as the binding does:
        a string, or a callable that returns one (only called on error)."""
        try:
            return self._live_conn().call(op, args, data)
        except ErrorReply as exc:
            raise self._error(exc, err) from None

    # -- creation and configuration ----------------------------------------------

    def create_with_rados(self, rados_inst: Any) -> None:
        raise OperationNotSupported(
            _errno.EOPNOTSUPP, "libcephfs_proxy cannot share a rados.Rados instance with "
            "libcephfsd: configure the mount with conffile/conf/auth_id instead")

    def create(self, conf: dict | None = None, conffile: Any = NO_CONF_FILE,
               auth_id: Any = None) -> None:
        if conf is not None and not isinstance(conf, dict):
            raise TypeError("conf must be dict or None")
        cstr(conffile, "configfile", opt=True)
        auth = cstr(auth_id, "auth_id", opt=True)
        if self._conn is not None:
            self._conn.close()
        self._conn = Connection(cache_entries=cache_settings())
        self._readonly_fds.clear()
        self._call(Op.CREATE, (auth,), "libcephfs_initialize failed")
        self.state = "configuring"
        if conffile in (self.NO_CONF_FILE, None):
            pass
        elif conffile in (self.DEFAULT_CONF_FILES, ""):
            self.conf_read_file(None)
        else:
            self.conf_read_file(conffile)
        if conf is not None:
            for key, value in conf.items():
                self.conf_set(key, value)

    def conf_read_file(self, conffile: Any = None) -> None:
        name = cstr(conffile, "conffile", opt=True)
        path, content = _read_conf_file(name)
        self._call(Op.CONF_READ_FILE, (path, content), "error calling conf_read_file")

    def conf_parse_argv(self, argv: Any) -> None:
        self.require_state("configuring")
        self._call(Op.CONF_PARSE_ARGV, (cstr_list(argv, "argv"),),
                   "error calling conf_parse_argv")

    def conf_get(self, option: Any) -> str | None:
        self.require_state("configuring", "initialized", "mounted")
        return self._call(Op.CONF_GET, (cstr(option, "option"),), "error calling conf_get")[0]

    def conf_set(self, option: Any, val: Any) -> None:
        self.require_state("configuring", "initialized", "mounted")
        option = cstr(option, "option")
        val = cstr(val, "val")
        self._call(Op.CONF_SET, (option, val), "error calling conf_set")

    def set_mount_timeout(self, timeout: Any) -> None:
        self.require_state("configuring", "initialized")
        if not isinstance(timeout, int):
            raise TypeError("timeout must be an integer")
        if timeout < 0:
            raise make_ex(_errno.EINVAL, "timeout must be greater than or equal to 0")
        self._call(Op.SET_MOUNT_TIMEOUT, (timeout,), "error setting mount timeout")

    def set_session_timeout(self, timeout: Any) -> None:
        if not isinstance(timeout, int):
            raise TypeError("timeout must be an int")
        self._call(Op.SET_SESSION_TIMEOUT, (timeout,), "error setting session timeout")

    def set_uuid(self, uuid: Any) -> None:
        self._call(Op.SET_UUID, (cstr(uuid, "uuid"),), "error setting uuid")

    def version(self) -> tuple[int, int, int]:
        if self._conn is None:
            raise LibCephFSStateError("no connection to libcephfsd")
        return self._conn.hello.ceph_version

    # -- life cycle ------------------------------------------------------------------

    def init(self) -> None:
        self.require_state("configuring")
        self._call(Op.INIT, (), "error calling ceph_init")
        self.state = "initialized"

    def mount(self, mount_root: Any = None, filesystem_name: Any = None) -> None:
        # From 'configuring' the binding calls init() first; the daemon's
        # MOUNT initialises only when it does not share an existing mount.
        if self.state != "configuring":
            self.require_state("initialized")
        if filesystem_name is None:
            filesystem_name = b""
        else:
            filesystem_name = cstr(filesystem_name, "filesystem_name")
        root = b"/" if mount_root is None else mount_root
        if not isinstance(root, bytes):
            raise TypeError(f"expected bytes, {type(root).__name__} found")
        self._call(Op.MOUNT, (root, filesystem_name or None),
                   "error calling ceph_mount" if not filesystem_name else
                   "error calling ceph_select_filesystem")
        self.state = "mounted"
        self._cwd = b"/"

    def _left_mount(self) -> None:
        self.state = "initialized"
        self._cwd = b"/"
        self._readonly_fds.clear()
        if self._conn is not None:
            self._conn.left_mount()

    def unmount(self) -> None:
        self.require_state("mounted")
        self._call(Op.UNMOUNT, (), "error calling ceph_unmount")
        self._left_mount()

    def abort_conn(self) -> None:
        self.require_state("mounted")
        self._call(Op.ABORT_CONN, (), "error calling ceph_abort_conn")
        self._left_mount()

    def shutdown(self) -> None:
        if self.state in ["initialized", "mounted"]:
            # The daemon releases this session's files, directories and
            # mount reference when the connection closes.
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.state = "shutdown"

    def get_instance_id(self) -> int:
        self.require_state("initialized", "mounted")
        return self._call(Op.GET_INSTANCE_ID, (), "error in get_instance_id")[0]

    def get_fscid(self) -> int:
        self.require_state("mounted")
        return self._call(Op.GET_FSCID, (), "error fetching fscid")[0]

    def get_addrs(self) -> str:
        self.require_state("mounted")
        return self._call(Op.GET_ADDRS, (), "error calling getaddrs")[0]

    def statfs(self, path: Any) -> dict:
        self.require_state("mounted")
        path = cstr(path, "path")
        return self._call(Op.STATFS, (path,), lambda: "statfs failed: %s" % path)[0]

    def sync_fs(self) -> None:
        self.require_state("mounted")
        self._call(Op.SYNC_FS, (), "sync_fs failed")

    def get_cap_return_timeout(self) -> int:
        self.require_state("mounted")
        return self._call(Op.GET_CAP_RETURN_TIMEOUT, (), "error in get_cap_return_timeout")[0]

    # -- cwd and umask ------------------------------------------------------------------

    def getcwd(self) -> bytes:
        self.require_state("mounted")
        # The cwd is this session's own: the daemon told us at the last chdir.
        return self._cwd

    def chdir(self, path: Any) -> None:
        self.require_state("mounted")
        self._cwd = self._call(Op.CHDIR, (cstr(path, "path"),), "chdir failed")[0]

    def umask(self, mode: Any) -> int:
        self.require_state("mounted")
        return self._call(Op.UMASK, (_cint(mode),), "error in umask")[0]

    # -- directories ------------------------------------------------------------------------

    def opendir(self, path: Any) -> DirResult:
        self.require_state("mounted")
        path = cstr(path, "path")
        while self._orphan_dirs:
            try:
                self._call(Op.CLOSEDIR, (self._orphan_dirs.pop(),), "closedir failed")
            except Error:
                pass
        conn = self._conn
        if conn is not None and conn.listdir:
            apath = self._abs(path)
            return DirResult(self, *self._list(path, apath), path=apath)
        (handle, pos), _ = self._call(Op.OPENDIR, (path,),
                                      lambda: "opendir failed at {}".format(path.decode("utf-8")))
        return DirResult(self, handle, pos)

    def _list(self, path: bytes, apath: bytes) -> Listing:
        """LISTDIR of *path* (*apath* made absolute): from the cache if it
        holds the listing, else asked (and cached when complete)."""
        conn = self._live_conn()
        err = lambda: "opendir failed at {}".format(path.decode("utf-8"))  # noqa: E731
        key = (4, apath)
        value = MISS if conn.cache is None else conn.lookup(key)
        if value is MISS:
            try:
                value = conn.fetch(Op.LISTDIR, (path, READDIR_BATCH), key, _listing)
            except ErrorReply as exc:
                raise self._error(exc, err) from None
        elif type(value) is ErrorReply:
            raise self._error(value, err)
        return value

    def readdir(self, handle: Any) -> DirEntry | None:
        handle = _check_dir(handle)
        self.require_state("mounted")
        return handle.readdir()

    def closedir(self, handle: Any) -> None:
        handle = _check_dir(handle)
        self.require_state("mounted")
        return handle.close()

    def rewinddir(self, handle: Any) -> None:
        return _check_dir(handle).rewinddir()

    def telldir(self, handle: Any) -> int:
        return _check_dir(handle).telldir()

    def seekdir(self, handle: Any, offset: Any) -> None:
        return _check_dir(handle).seekdir(offset)

    def mkdir(self, path: Any, mode: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        self._call(Op.MKDIR, (path, mode), lambda: "error in mkdir {}".format(path.decode("utf-8")))

    def mkdirs(self, path: Any, mode: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        self._call(Op.MKDIRS, (path, mode),
                   lambda: "error in mkdirs {}".format(path.decode("utf-8")))

    def rmdir(self, path: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        self._call(Op.RMDIR, (path,), lambda: "error in rmdir {}".format(path.decode("utf-8")))

    # -- snapshots -----------------------------------------------------------------------------

    def mksnap(self, path: Any, name: Any, mode: Any, metadata: Any = {}) -> int:  # noqa: B006
        self.require_state("mounted")
        path = cstr(path, "path")
        name = cstr(name, "name")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be an dictionary")
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("metadata key and values should be strings")
        return self._call(Op.MKSNAP, (path, name, mode, metadata), "mksnap error")[0]

    def rmsnap(self, path: Any, name: Any) -> int:
        self.require_state("mounted")
        path = cstr(path, "path")
        name = cstr(name, "name")
        return self._call(Op.RMSNAP, (path, name), "rmsnap error")[0]

    def snap_info(self, path: Any) -> dict:
        self.require_state("mounted")
        return self._call(Op.SNAP_INFO, (cstr(path, "path"),), "snap_info error")[0]

    # -- attributes -------------------------------------------------------------------------------

    def chmod(self, path: Any, mode: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        self._call(Op.CHMOD, (path, mode), lambda: "error in chmod {}".format(path.decode("utf-8")))

    def lchmod(self, path: Any, mode: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        self._call(Op.LCHMOD, (path, mode),
                   lambda: "error in chmod {}".format(path.decode("utf-8")))

    def fchmod(self, fd: Any, mode: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        self._call(Op.FCHMOD, (fd, mode), "error in fchmod")

    def chown(self, path: Any, uid: Any, gid: Any, follow_symlink: Any = True) -> None:
        self.require_state("mounted")
        if not isinstance(uid, int):
            raise TypeError("uid must be an int")
        elif not isinstance(gid, int):
            raise TypeError("gid must be an int")
        path = cstr(path, "path")
        self._call(Op.CHOWN, (path, uid, gid, bool(follow_symlink)),
                   lambda: "error in chown {}".format(path.decode("utf-8")))

    def lchown(self, path: Any, uid: Any, gid: Any) -> None:
        self.chown(path, uid, gid, follow_symlink=False)

    def fchown(self, fd: Any, uid: Any, gid: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        elif not isinstance(uid, int):
            raise TypeError("uid must be an int")
        elif not isinstance(gid, int):
            raise TypeError("gid must be an int")
        self._call(Op.FCHOWN, (fd, uid, gid), "error in fchown")

    def stat(self, path: Any, follow_symlink: Any = True) -> Any:
        if self.state != "mounted":
            self.require_state("mounted")
        path = cstr(path, "path")
        follow = bool(follow_symlink)
        err = lambda: "error in stat: {}".format(path.decode("utf-8"))  # noqa: E731
        conn = self._conn
        if conn is None or conn.cache is None:
            return stat_result(self._call(Op.STAT, (path, follow), err)[0])
        return self._cached_stat(conn, path, (0, self._abs(path), follow), err)

    def _cached_stat(self, conn: Connection, path: bytes, key: tuple, err: Any) -> Any:
        """The stat (or lstat) under *key*: cached, or fetched (_fetch_stat)."""
        value = conn.lookup(key)
        if value is MISS:
            try:
                value = self._fetch_stat(conn, path, key)
            except ErrorReply as exc:
                raise self._error(exc, err) from None
        if type(value) is ErrorReply:
            raise self._error(value, err)
        return value

    @staticmethod
    def _fetch_stat(conn: Connection, path: bytes, key: tuple) -> Any:
        """stat or lstat through the daemon, cached under every key it answers.

        lstat of a name that is not a symlink (or does not resolve: the same
        error either way) is also its stat, with the same deps: so a stat is
        asked as an lstat first, and only a symlink costs a second call.
        Not for a trailing slash, which makes lstat follow.
        """
        _, apath, follow = key
        if apath[-1:] == b"/":
            return conn.fetch(Op.STAT, (path, follow), key, stat_result)
        twin = (0, apath, True)
        value = conn.fetch(Op.STAT, (path, False), (0, apath, False), stat_result,
                           also=lambda v: (twin,) if _not_a_link(v) else ())
        if follow and not _not_a_link(value):
            value = conn.fetch(Op.STAT, (path, True), key, stat_result)
        return value

    def lstat(self, path: Any) -> Any:
        return self.stat(path, follow_symlink=False)

    def fstat(self, fd: Any) -> Any:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        return self._cached((3, fd), Op.FSTAT, (fd,), stat_result, "error in fsat")

    def statx(self, path: Any, mask: Any, flag: Any) -> dict:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mask, int):
            raise TypeError("flag must be a int")
        if not isinstance(flag, int):
            raise TypeError("flag must be a int")
        err = lambda: "error in stat: %s" % path  # noqa: E731
        if flag & C.AT_STATX_FORCE_SYNC:
            return statx_result(self._call(Op.STATX, (path, mask, flag), err)[0])
        conn = self._conn
        if (conn is not None and conn.cache is not None and not mask & ~C.CEPH_STATX_BASIC_STATS
                and not flag & ~_STATX_FROM_STAT_FLAGS):
            # A stat/lstat of the same name answers any basic fields: cached,
            # shared by the mount's clients, or asked for (and then cached
            # for stat, lstat and statx alike).
            st = self._cached_stat(conn, path,
                                   (0, self._abs(path), not flag & C.AT_SYMLINK_NOFOLLOW), err)
            return {name: st[i] for bit, name, i in _STATX_FIELDS if mask & bit}
        # A copy: callers may change the dict, the cached one must not.
        return dict(self._cached((1, self._abs(path), mask, flag), Op.STATX,
                                 (path, mask, flag), statx_result, err))

    def setattrx(self, path: Any, dict_stx: Any, mask: Any, flags: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(dict_stx, dict):
            raise TypeError("dict_stx must be a dict")
        if not isinstance(mask, int):
            raise TypeError("mask must be a int")
        if not isinstance(flags, int):
            raise TypeError("flags must be a int")
        self._call(Op.SETATTRX, (path, _stx_out(dict_stx, mask), mask, flags),
                   lambda: "error in setattrx: %s" % path)

    def fsetattrx(self, fd: Any, dict_stx: Any, mask: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be a int")
        if not isinstance(dict_stx, dict):
            raise TypeError("dict_stx must be a dict")
        if not isinstance(mask, int):
            raise TypeError("mask must be a int")
        self._call(Op.FSETATTRX, (fd, _stx_out(dict_stx, mask), mask), "error in fsetattrx")

    def truncate(self, path: Any, size: Any) -> None:
        if not isinstance(size, int):
            raise TypeError("size must be a int")
        self.setattrx(path, {"size": size}, C.CEPH_SETATTR_SIZE, C.AT_SYMLINK_NOFOLLOW)

    def ftruncate(self, fd: Any, size: Any) -> None:
        if not isinstance(size, int):
            raise TypeError("size must be a int")
        self.fsetattrx(fd, {"size": size}, C.CEPH_SETATTR_SIZE)

    def utime(self, path: Any, times: Any = None) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        self._call(Op.UTIME, (path, _utime_times(times, int, "an int")),
                   lambda: "error in utime {}".format(path.decode("utf-8")))

    def futime(self, fd: Any, times: Any = None) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        self._call(Op.FUTIME, (fd, _utime_times(times, int, "an int")), "error in futime")

    def utimes(self, path: Any, times: Any = None, follow_symlink: Any = True) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        self._call(Op.UTIMES, (path, _utime_times(times, (int, float), "an int or a float"),
                               bool(follow_symlink)),
                   lambda: "error in utimes {}".format(path.decode("utf-8")))

    def lutimes(self, path: Any, times: Any = None) -> None:
        self.utimes(path, times=times, follow_symlink=False)

    def futimes(self, fd: Any, times: Any = None) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        self._call(Op.FUTIMES, (fd, _utime_times(times, (int, float), "an int or a float")),
                   "error in futimes")

    def futimens(self, fd: Any, times: Any = None) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        self._call(Op.FUTIMENS, (fd, _utime_times(times, (int, float), "an int or a float")),
                   "error in futimens")

    # -- namespace ------------------------------------------------------------------------------

    def symlink(self, existing: Any, newname: Any) -> None:
        self.require_state("mounted")
        existing = cstr(existing, "existing")
        newname = cstr(newname, "newname")
        self._call(Op.SYMLINK, (existing, newname), "error in symlink")

    def link(self, existing: Any, newname: Any) -> None:
        self.require_state("mounted")
        existing = cstr(existing, "existing")
        newname = cstr(newname, "newname")
        self._call(Op.LINK, (existing, newname), "error in link")

    def readlink(self, path: Any, size: Any) -> bytes:
        self.require_state("mounted")
        path = cstr(path, "path")
        size = _cint(size)
        if size < PATH_MAX and (self._conn is None or self._conn.cache is None):
            return self._call(Op.READLINK, (path, size), "error in readlink")[0]
        # The cache holds whole targets; a short buffer gets a cut one.
        target = self._cached((2, self._abs(path)), Op.READLINK, (path, PATH_MAX),
                              _same, "error in readlink")
        return target if size >= PATH_MAX else target[:max(size, 0)]

    def unlink(self, path: Any) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        self._call(Op.UNLINK, (path,), lambda: "error in unlink: {}".format(path.decode("utf-8")))

    def rename(self, src: Any, dst: Any) -> None:
        self.require_state("mounted")
        src = cstr(src, "source")
        dst = cstr(dst, "destination")
        self._call(Op.RENAME, (src, dst), lambda: "error in rename {} to {}".format(
            src.decode("utf-8"), dst.decode("utf-8")))

    def mknod(self, path: Any, mode: Any, rdev: Any = 0) -> None:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        if not isinstance(rdev, int):
            raise TypeError("rdev must be an int")
        self._call(Op.MKNOD, (path, mode, rdev),
                   lambda: "error in mknod {}".format(path.decode("utf-8")))

    # -- files ---------------------------------------------------------------------------------

    def open(self, path: Any, flags: Any, mode: Any = 0) -> int:
        self.require_state("mounted")
        path = cstr(path, "path")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        flags = _open_flags(flags)
        err = lambda: "error in open {}".format(path.decode("utf-8"))  # noqa: E731
        if flags & (os.O_ACCMODE | os.O_CREAT | os.O_TRUNC) != os.O_RDONLY:
            return self._call(Op.OPEN, (path, flags, mode), err)[0]
        conn = self._live_conn()
        if conn.open_read_granted:
            # The fstat and a small file's content come with the open, for
            # the cache: open, read and close of such a file is one round trip.
            try:
                fd = conn.open_read(path, flags, mode, stat_result)
            except ErrorReply as exc:
                raise self._error(exc, err) from None
        else:
            fd = self._call(Op.OPEN, (path, flags, mode), err)[0]
        self._readonly_fds.add(fd)
        return fd

    def close(self, fd: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        conn = self._conn
        if conn is not None:
            conn.forget((3, fd))    # the number may name another file next
            conn.forget((9, fd))
            if fd in self._readonly_fds:
                # Closing what was only read cannot fail or change anything
                # another call could see: no need to wait for it.
                self._readonly_fds.discard(fd)
                try:
                    conn.post(Op.CLOSE, (fd,))
                except ErrorReply as exc:
                    raise self._error(exc, "error in close") from None
                return
        self._call(Op.CLOSE, (fd,), "error in close")

    def read(self, fd: Any, offset: Any, l: Any) -> bytes:  # noqa: E741 - the binding's name
        self.require_state("mounted")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        if not isinstance(l, int):
            raise TypeError("l must be an int")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if l < 0:
            raise ValueError("Negative size passed to PyBytes_FromStringAndSize")
        conn = self._conn
        if offset >= 0 and fd in self._readonly_fds and conn is not None:
            content = conn.lookup((9, fd), count_miss=False)
            if type(content) is FileData:
                return content.data[offset:offset + l]
        if l >= WINDOW_MIN and conn is not None and conn.window() is not None:
            if l >= _readbuf.MIN_READ:
                # libcephfs reads into a read buffer, which is the bytes
                # returned: no copy at all in this process.
                data = self._through_window(conn.read_buffered, "error in read", fd, offset, l)
                if data is not None:
                    return data
            # libcephfs reads into the shared window; the one copy is into the
            # bytes returned, as with the binding.
            return self._through_window(conn.read_window, "error in read", fd, offset, l)
        chunk = self._conn.max_data if self._conn else l
        if l <= chunk:
            _, data = self._call(Op.READ, (fd, offset, l), "error in read")
            return data if type(data) is bytes else bytes(data)
        parts: list = []
        done = 0
        while done < l:
            want = min(chunk, l - done)
            _, data = self._call(Op.READ, (fd, offset + done if offset >= 0 else offset, want),
                                 "error in read")
            parts.append(data)
            done += len(data)
            if len(data) < want:
                break
        return b"".join(parts)

    def write(self, fd: Any, buf: Any, offset: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(buf, bytes):
            raise TypeError("buf must be a bytes")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        conn = self._conn
        if len(buf) >= WINDOW_MIN and conn is not None and conn.window() is not None:
            if len(buf) >= _readbuf.MIN_READ // 2:
                # The result of a read through a read buffer (a copy): written
                # from where it lies, no copy here.
                n = self._through_window(conn.write_buffered, "error in write", fd, offset,
                                         buf)
                if n is not None:
                    return n
            return self._through_window(conn.write_window, "error in write", fd, offset,
                                        memoryview(buf))
        chunk = self._conn.max_data if self._conn else len(buf)
        if len(buf) <= chunk:
            return self._call(Op.WRITE, (fd, offset), "error in write", buf)[0]
        view = memoryview(buf)
        done = 0
        while done < len(buf):
            piece = view[done:done + chunk]
            n = self._call(Op.WRITE, (fd, offset + done if offset >= 0 else offset),
                           "error in write", piece)[0]
            done += n
            if n < len(piece):
                break
        return done

    def _through_window(self, io: Any, err: str, *args: Any) -> Any:
        """Connection.read_window/write_window(*args), the window held,
        libcephfs errors worded as the binding words them."""
        conn = self._conn
        assert conn is not None
        try:
            with conn.window_lock:
                return io(*args)
        except ErrorReply as exc:
            raise self._error(exc, err) from None

    def preadv(self, fd: Any, buffers: Any, offset: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(buffers, list):
            raise TypeError("buffers must be a list")
        for buf in buffers:
            if not isinstance(buf, bytearray):
                raise TypeError("buffers must be a list of bytes")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        lengths = [len(b) for b in buffers]
        total = sum(lengths)
        if self._conn is not None and total <= self._conn.max_data:
            n, data = self._call(Op.PREADV, (fd, lengths, offset), "error in preadv")
        else:
            data = self.read(fd, offset, total)
            n = len(data)
        pos = 0
        for buf in buffers:
            if pos >= n:
                break
            k = min(len(buf), n - pos)
            buf[:k] = data[pos:pos + k]
            pos += k
        return n

    def pwritev(self, fd: Any, buffers: Any, offset: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(buffers, list):
            raise TypeError("buffers must be a list")
        for buf in buffers:
            if not isinstance(buf, bytes):
                raise TypeError("buffers must be a list of bytes")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        data = b"".join(buffers)
        if self._conn is not None and len(data) <= self._conn.max_data:
            return self._call(Op.PWRITEV, (fd, [len(b) for b in buffers], offset),
                              "error in pwritev", data)[0]
        return self.write(fd, data, offset)

    def lseek(self, fd: Any, offset: Any, whence: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        if not isinstance(whence, int):
            raise TypeError("whence must be an int")
        return self._call(Op.LSEEK, (fd, offset, whence), "error in lseek")[0]

    def fsync(self, fd: Any, syncdataonly: Any) -> None:
        fd, syncdataonly = _cint(fd), _cint(syncdataonly)
        self.require_state("mounted")
        self._call(Op.FSYNC, (fd, syncdataonly), "fsync failed")

    def fallocate(self, fd: Any, offset: Any, length: Any, mode: Any = 0) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(mode, int):
            raise TypeError("mode must be an int")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        if not isinstance(length, int):
            raise TypeError("length must be an int")
        self._call(Op.FALLOCATE, (fd, offset, length, mode), "fallocate failed")

    def flock(self, fd: Any, operation: Any, owner: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(operation, int):
            raise TypeError("operation must be an int")
        self._readonly_fds.discard(fd)      # its close releases the lock: waited for
        return self._call(Op.FLOCK, (fd, operation, _cint(owner)), "error in write")[0]

    def lazyio(self, fd: Any, enable: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(enable, int):
            raise TypeError("enable must be an int")
        self._readonly_fds.discard(fd)
        self._call(Op.LAZYIO, (fd, enable), "lazyio failed")

    def lazyio_propagate(self, fd: Any, offset: Any, count: Any) -> None:
        self._lazyio_range(Op.LAZYIO_PROPAGATE, fd, offset, count, "lazyio_propagate failed")

    def lazyio_synchronize(self, fd: Any, offset: Any, count: Any) -> None:
        self._lazyio_range(Op.LAZYIO_SYNCHRONIZE, fd, offset, count, "lazyio_synchronize failed")

    def _lazyio_range(self, op: Op, fd: Any, offset: Any, count: Any, err: str) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(offset, int):
            raise TypeError("offset must be an int")
        if not isinstance(count, int):
            raise TypeError("count must be an int")
        self._call(op, (fd, offset, count), err)

    # -- extended attributes -----------------------------------------------------------------

    def getxattr(self, path: Any, name: Any, size: Any = 255, follow_symlink: Any = True) -> bytes:
        self.require_state("mounted")
        path = cstr(path, "path")
        name = cstr(name, "name")
        return self._call(Op.GETXATTR, (path, name, _cint(size), bool(follow_symlink)),
                          "error in getxattr")[0]

    def fgetxattr(self, fd: Any, name: Any, size: Any = 255) -> bytes:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        name = cstr(name, "name")
        return self._call(Op.FGETXATTR, (fd, name, _cint(size)), "error in fgetxattr")[0]

    def lgetxattr(self, path: Any, name: Any, size: Any = 255) -> bytes:
        return self.getxattr(path, name, size=size, follow_symlink=False)

    def setxattr(self, path: Any, name: Any, value: Any, flags: Any,
                 follow_symlink: Any = True) -> None:
        self.require_state("mounted")
        name = cstr(name, "name")
        path = cstr(path, "path")
        if not isinstance(flags, int):
            raise TypeError("flags must be a int")
        if not isinstance(value, bytes):
            raise TypeError("value must be a bytes")
        self._call(Op.SETXATTR, (path, name, value, flags, bool(follow_symlink)),
                   "error in setxattr")

    def fsetxattr(self, fd: Any, name: Any, value: Any, flags: Any) -> None:
        self.require_state("mounted")
        name = cstr(name, "name")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        if not isinstance(flags, int):
            raise TypeError("flags must be a int")
        if not isinstance(value, bytes):
            raise TypeError("value must be a bytes")
        self._call(Op.FSETXATTR, (fd, name, value, flags), "error in fsetxattr")

    def lsetxattr(self, path: Any, name: Any, value: Any, flags: Any) -> None:
        self.setxattr(path, name, value, flags, follow_symlink=False)

    def removexattr(self, path: Any, name: Any, follow_symlink: Any = True) -> None:
        self.require_state("mounted")
        name = cstr(name, "name")
        path = cstr(path, "path")
        self._call(Op.REMOVEXATTR, (path, name, bool(follow_symlink)), "error in removexattr")

    def fremovexattr(self, fd: Any, name: Any) -> None:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        name = cstr(name, "name")
        self._call(Op.FREMOVEXATTR, (fd, name), "error in fremovexattr")

    def lremovexattr(self, path: Any, name: Any) -> None:
        self.removexattr(path, name, follow_symlink=False)

    def listxattr(self, path: Any, size: Any = 65536, follow_symlink: Any = True) -> tuple:
        self.require_state("mounted")
        path = cstr(path, "path")
        return tuple(self._call(Op.LISTXATTR, (path, _cint(size), bool(follow_symlink)),
                                "error in listxattr")[0])

    def flistxattr(self, fd: Any, size: Any = 65536) -> tuple:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        return tuple(self._call(Op.FLISTXATTR, (fd, _cint(size)), "error in flistxattr")[0])

    def llistxattr(self, path: Any, size: Any = 65536) -> tuple:
        return self.listxattr(path, size=size, follow_symlink=False)

    # -- layout, pools, misc ------------------------------------------------------------------------

    def get_layout(self, fd: Any) -> dict:
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        return self._call(Op.GET_LAYOUT, (fd,), "error in get_file_layout")[0]

    def get_default_pool(self) -> dict:
        return self._call(Op.GET_DEFAULT_POOL, (), "error in get_default_data_pool_name")[0]

    def get_file_replication(self, fd: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        return self._call(Op.GET_FILE_REPLICATION, (fd,), "error in get_file_replication")[0]

    def get_path_replication(self, path: Any) -> int:
        self.require_state("mounted")
        path = cstr(path, "path")
        return self._call(Op.GET_PATH_REPLICATION, (path,), "error in get_path_replication")[0]

    def get_pool_id(self, pool_name: Any) -> int:
        self.require_state("mounted")
        pool_name = cstr(pool_name, "pool_name")
        return self._call(Op.GET_POOL_ID, (pool_name,), "error in get_pool_id")[0]

    def get_pool_replication(self, pool_id: Any) -> int:
        self.require_state("mounted")
        if not isinstance(pool_id, int):
            raise TypeError("pool_id must be an int")
        return self._call(Op.GET_POOL_REPLICATION, (pool_id,), "error in get_pool_replication")[0]

    def debug_get_fd_caps(self, fd: Any) -> int:
        self.require_state("mounted")
        if not isinstance(fd, int):
            raise TypeError("fd must be an int")
        return self._call(Op.DEBUG_GET_FD_CAPS, (fd,), "error in debug_get_fd_caps")[0]

    def debug_get_file_caps(self, path: Any) -> int:
        self.require_state("mounted")
        path = cstr(path, "path")
        return self._call(Op.DEBUG_GET_FILE_CAPS, (path,), "error in debug_get_file_caps")[0]

    def mds_command(self, mds_spec: Any, args: Any, input_data: Any) -> tuple:
        mds_spec = cstr(mds_spec, "mds_spec")
        args = cstr(args, "args")
        input_data = cstr(input_data, "input_data")
        if self.state != "mounted":
            # As libcephfs answers on a handle without MDS sessions.
            return (-_errno.ENOTCONN, b"", "")
        ret, outbuf, outs = self._call(Op.MDS_COMMAND, (mds_spec, args, input_data),
                                       "mds_command failed")[0]
        return (ret, outbuf, outs)
