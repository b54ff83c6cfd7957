"""One client's session: its configuration, its mount, its virtual state.

A session belongs to one connection and is only touched by that
connection's thread (``describe()`` excepted, which reads counters).  Its
state is virtual: the cwd, the umask, the open files and directories are the
session's own, so sharing a real mount never lets one client's ``chdir``,
``umask`` or handles affect another.  Paths are resolved against the
session's cwd before they reach libcephfs; fds and directory handles are
checked against the session's own tables.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import mmap
import os
import re
import stat as stat_mod
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import protocol, shared
from .backend import raw_read, raw_write
from .coherence import NegativeLookup, Notifier, Uncacheable, ino_and_type, walk
from .mounts import ConfigError, MountConfig, SharedMount
from .peer import Peer
from .protocol import (DATA_CEILING, OPEN_READ_MAX, ErrorSource, Feature, Op, Reply, Request,
                       RequestError, ServerHello)

if TYPE_CHECKING:
    from .placement import Placement
    from .server import Server
    from .transport import SocketTransport
    from .window import ReadBuffer, Window

log = logging.getLogger(__name__)

#: libcephfs's initial umask, which each session starts from.
DEFAULT_UMASK = 0o022
#: Creation of a mount's shared table (SHARED_CACHE), once.
_SHARED_LOCK = threading.Lock()
PAGE = mmap.PAGESIZE
#: Read buffers one connection may hold at once.
MAX_BUFFERS = 8


class SessionError(Exception):
    """The daemon refuses a request of this session.

    ``source`` is CEPHFS when the daemon answers for libcephfs what libcephfs
    itself would have answered (an fd it never handed out, chdir to a file),
    so that clients word it as the binding does.
    """

    def __init__(self, err: int, message: str, source: ErrorSource = ErrorSource.DAEMON):
        super().__init__(message)
        self.errno = err
        self.source = source


class WithData:
    """A handler result that carries bulk bytes in the reply's data section."""

    __slots__ = ("result", "data")

    def __init__(self, result: Any, data: bytes | bytearray):
        self.result = result
        self.data = data


class Cacheable:
    """A handler result the client may cache: value, deadline, dependencies,
    and the reply's data section, if any (part of the answer)."""

    __slots__ = ("result", "deadline", "deps", "seq0", "data")

    def __init__(self, result: Any, deadline: float, deps: list, seq0: int,
                 data: bytes = b""):
        self.result = result
        self.deadline = deadline
        self.deps = deps
        #: The tracker's seq before the answer was read (for _share).
        self.seq0 = seq0
        self.data = data


def _meta(deadline: float, deps: list) -> list:
    return [deadline, [list(d) if isinstance(d, tuple) else d for d in deps]]


class _Timestamp(float):
    """Seconds since the epoch, for the binding's setattrx, which calls ``.timestamp()``.

    Avoids a round trip through naive datetimes and the daemon's time zone.
    """

    def timestamp(self) -> float:
        return float(self)


_EPOCH = datetime.datetime(1970, 1, 1)


def _seconds(dt: Any) -> int:
    # The binding builds naive datetimes with fromtimestamp(tv_sec) in the
    # daemon's zone, which the backend pins to UTC, so the difference from the
    # naive epoch inverts it exactly (5x cheaper than calendar.timegm).
    delta = dt - _EPOCH
    return delta.days * 86400 + delta.seconds


def _stat_list(st: Any) -> list:
    return [st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
            st.st_size, st.st_blksize, st.st_blocks,
            _seconds(st.st_atime), _seconds(st.st_mtime), _seconds(st.st_ctime)]


_SLASHES = re.compile(rb"/{2,}")
#: File types mknod(2) creates (0: a regular file, as Linux takes it).
_MKNOD_TYPES = frozenset({0, stat_mod.S_IFREG, stat_mod.S_IFCHR, stat_mod.S_IFBLK,
                          stat_mod.S_IFIFO, stat_mod.S_IFSOCK})


def _read_entries(fs: Any, handle: Any, max_entries: int) -> list:
    """[entries, eof]: up to *max_entries* (at least 1, at most
    READDIR_MAX_BATCH) entries of an open directory, each with the position
    after it, so the client can answer telldir() for entries it buffered."""
    entries: list[list] = []
    for _ in range(max(1, min(max_entries, protocol.READDIR_MAX_BATCH))):
        entry = fs.readdir(handle)
        if entry is None:
            return [entries, True]
        entries.append([entry.d_ino, entry.d_off, entry.d_reclen, entry.d_type,
                        entry.d_name, fs.telldir(handle)])
    return [entries, False]


def _collapse_slashes(path: bytes) -> bytes:
    """'//' -> '/', '///a' -> '/a', 'a//b/' -> 'a/b/'."""
    return _SLASHES.sub(b"/", path)


def _statx_wire(result: dict) -> dict:
    for key in ("atime", "mtime", "ctime", "btime"):
        if key in result:
            result[key] = _seconds(result[key])
    return result


def _stx_in(stx: dict) -> dict:
    return {k: (_Timestamp(v) if k in protocol.STX_TIME_FIELDS else v) for k, v in stx.items()}


class Session:
    """See the module docstring.  ``handle()`` never raises for a bad request."""

    def __init__(self, server: Server, sid: int, peer: Peer):
        self.server = server
        self.id = sid
        self.peer = peer
        self.transport: SocketTransport | None = None
        self.connected_at = time.time()
        self.greeted = False
        #: Features granted in the handshake.
        self.features = Feature(0)
        #: Read buffers by id (READ_BUFFERS), and the next id to give.
        self.buffers: dict[int, ReadBuffer] = {}
        self._next_buffer = 1
        #: The shared data window, once the client asked for it (DATA_WINDOW).
        self.window: Window | None = None
        self.config: MountConfig | None = None
        #: (auth_id, steps) to rebuild the configuration after an unmount, as
        #: the binding allows mounting again.
        self._recipe_after_unmount: tuple | None = None
        self.initialized = False
        self.mount: SharedMount | None = None
        self.cwd = b"/"
        self.umask = DEFAULT_UMASK
        #: open fds -> inode number (None until a cache invalidation needed it)
        self.files: dict[int, int | None] = {}
        #: guards writes to this session's socket: its own replies, and
        #: invalidation events other sessions' threads push to it
        self.send_lock = threading.Lock()
        #: the cache channel, when the client was granted CLIENT_CACHE
        self.notifier: Notifier | None = None
        self.fds_to_send: list[int] = []
        #: Descriptors to close once the reply is sent (or failed to be).
        self.fds_to_close: list[int] = []
        #: Takes bytes from the daemon's in-flight budget for the request in
        #: hand (set by the connection; released once the reply is sent).
        self.reserve: Callable[[int], None] = lambda n: None
        self.dirs: dict[int, Any] = {}
        self._next_dir = 1
        self.calls = 0
        #: The OS thread id of the connection's thread (for top -H, py-spy, perf).
        self.thread_id: int | None = None

    def __repr__(self) -> str:
        return (f"<Session #{self.id} {self.peer} {self.state} files={len(self.files)} "
                f"dirs={len(self.dirs)}>")

    @property
    def state(self) -> str:
        if self.mount is not None:
            return "mounted"
        if self.initialized:
            return "initialized"
        if self.config is not None or self._recipe_after_unmount is not None:
            return "configuring"
        return "connected" if self.greeted else "new"

    def describe(self) -> dict:
        mount = self.mount
        return {"id": self.id, "pid": self.peer.pid, "uid": self.peer.uid, "gid": self.peer.gid,
                "state": self.state, "mount": mount.id if mount else None,
                "cwd": self.cwd.decode(errors="replace"), "open_files": len(self.files),
                "open_dirs": len(self.dirs), "calls": self.calls,
                "connected_at": self.connected_at, "thread": self.thread_id,
                "cache": self._cache_stats()}

    def _cache_stats(self) -> dict | None:
        notifier = self.notifier
        if notifier is None:
            return None
        try:
            stats = notifier.client_stats()
            stats.update(sent=int(notifier.page[0]), epoch=int(notifier.page[1]),
                         timed_out=notifier.timed_out)
            return stats
        except ValueError:  # closed under us
            return None

    # -- dispatch -----------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        self.calls += 1
        rid = request.id
        try:
            if not self.greeted:
                if request.op != Op.HELLO:
                    raise RequestError("handshake required: the first request must be HELLO",
                                       errno.EPROTO)
                return Reply(rid, 0, self._hello(request.args))
            if request.op == Op.HELLO:
                raise RequestError("HELLO was already done on this connection", errno.EPROTO)
            op, args = protocol.check_args(request.op, request.args)
            handler = _HANDLERS[op]
            if op in _TAKES_DATA:
                result = handler(self, request.data, *args)
            elif op in _ELSEWHERE:
                result = _in_own_thread(self.server.placement, handler, self, *args)
            else:
                result = handler(self, *args)
            kind = type(result)
            if kind is WithData:
                return Reply(rid, 0, result.result, result.data)
            if kind is Cacheable:
                self._share(request, 0, result.result, result.deps, result.seq0)
                return Reply(rid, 0, result.result, result.data,
                             _meta(result.deadline, result.deps))
            return Reply(rid, 0, result)
        except NegativeLookup as exc:
            deadline = self._register(exc.deps, exc.seq0) if exc.seq0 is not None else None
            if deadline is not None and exc.seq0 is not None:
                self._share(request, exc.errno, [str(exc), ErrorSource.CEPHFS], exc.deps,
                            exc.seq0)
            return Reply(rid, exc.errno, [str(exc), ErrorSource.CEPHFS], b"",
                         _meta(deadline, exc.deps) if deadline is not None else None)
        except SessionError as exc:
            return Reply(rid, exc.errno, [str(exc), exc.source])
        except (RequestError, ConfigError) as exc:
            return Reply(rid, exc.errno, [str(exc), ErrorSource.DAEMON])
        except Exception as exc:
            known = self.server.backend.error_of(exc)
            if known is not None:
                return Reply(rid, known[0], [known[1], ErrorSource.CEPHFS])
            if type(exc) is OSError and exc.errno:    # raised by the daemon's own walk
                return Reply(rid, exc.errno, [exc.strerror or str(exc), ErrorSource.CEPHFS])
            if isinstance(exc, (TypeError, ValueError, OverflowError, KeyError)):
                return Reply(rid, errno.EINVAL, [f"invalid argument: {exc}", ErrorSource.DAEMON])
            log.exception("%r: %s failed unexpectedly", self, _op_name(request.op))
            return Reply(rid, errno.EIO, [f"libcephfsd internal error: {exc!r}",
                                          ErrorSource.DAEMON])

    def _hello(self, args: list) -> dict:
        features, options = protocol.check_hello(args)
        cache = None
        coherence = self.server.coherence
        if Feature.CLIENT_CACHE in features and coherence is not None and self.transport:
            entries = max(1, min(options.get("cache_entries", coherence.max_entries),
                                 coherence.max_entries))
            self.notifier = Notifier(self.transport.sock, self.send_lock, self.id,
                                     max_deps=entries * 16)
            self.fds_to_send = [self.notifier.fd_for_client()]
            cache = {"entries": entries, "ttl": coherence.ttl}
        else:
            features &= ~(Feature.CLIENT_CACHE | Feature.SHARED_CACHE | Feature.OPEN_READ)
        if self.transport is None:
            features &= ~(Feature.DATA_WINDOW | Feature.READ_BUFFERS)
        if not self.server.buffers.cap:
            features &= ~Feature.READ_BUFFERS
        self.features = features
        self.greeted = True
        if self.transport is not None:
            # Until now the client could send no data section at all.
            self.transport.max_data_in = self.server.max_data
        return ServerHello(protocol.PROTOCOL_VERSION, features, protocol.MAX_BODY,
                           self.server.max_data, self.id, f"libcephfsd {self.server.version}",
                           self.server.backend.version, cache).to_wire()

    # -- cache coherence ------------------------------------------------------------

    def _tracker(self) -> Any:
        mount = self.mount
        return mount.tracker if mount is not None else None

    def _caching(self) -> Any:
        """The tracker to register fills with, if this session's answers may be cached."""
        return self._tracker() if self.notifier is not None else None

    def _register(self, deps: list, seq0: int) -> float | None:
        tracker = self._tracker()
        if tracker is None or self.notifier is None:
            return None
        return tracker.register(self.notifier, deps, seq0)

    def _share(self, request: Request, err: int, result: Any, deps: list, seq0: int) -> None:
        """Also put a cacheable answer in the mount's shared table, if it has one."""
        mount = self.mount
        table = mount.shared if mount is not None else None
        if table is not None:
            key = shared.key_of(request.op, request.args)
            if key is not None:
                table.fill(key, err, result, deps, seq0)

    def op_shared_cache(self) -> dict:
        if Feature.SHARED_CACHE not in self.features:
            raise SessionError(errno.EPROTO, "SHARED_CACHE needs the SHARED_CACHE feature "
                               "(granted with CLIENT_CACHE only)")
        self._fs()
        mount = self.mount
        assert mount is not None
        if mount.tracker is None:
            raise SessionError(errno.EOPNOTSUPP, "this mount has no cache tracker")
        with _SHARED_LOCK:
            if mount.shared is None:
                mount.shared = shared.SharedTable(mount.tracker)
        fd = mount.shared.read_only_fd()
        self.fds_to_send, self.fds_to_close = [fd], [fd]
        return {"slots": shared.SLOTS, "slot_size": shared.SLOT_SIZE}

    def _cached_walk(self, path: bytes, follow: bool, full: bool = True
                     ) -> tuple[Any, bytes, list, int]:
        """walk() for a cacheable answer; a miss becomes a cacheable NegativeLookup."""
        tracker = self._tracker()
        seq0 = tracker.begin()
        try:
            st, canonical, deps = walk(self._fs(), path, follow, full,
                                       root_ino=self._root_ino())
        except NegativeLookup as exc:
            exc.seq0 = seq0
            raise
        return st, canonical, deps, seq0

    @contextlib.contextmanager
    def _changing(self, deps_of: Callable[[], list | None],
                  deps_after: Callable[[], list | None] | None = None) -> Iterator[None]:
        """Wrap a mutation: find what it changes first, invalidate it after.

        *deps_after*, if given, is looked up again after the change too: a
        name another client re-bound meanwhile is covered either way.  When
        the deps cannot be found and the change succeeded, every cache of
        the filesystem is flushed; when it failed, nothing changed, and a
        blind invalidation still refuses fills that raced with it.
        """
        tracker = self._tracker()
        if tracker is None:
            yield
            return
        try:
            deps = deps_of()
        except Exception:
            deps = None
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            if deps is not None and deps_after is not None:
                try:
                    deps = deps + (deps_after() or [])
                except Exception:
                    pass  # gone again: the deps from before still name it
            if deps is not None:
                tracker.invalidate(deps)
            elif succeeded:
                tracker.flush_all()
            else:
                tracker.blind()

    def _changing_path(self, path: bytes, follow: bool = True) -> Any:
        """_changing() for an attribute change through a path."""
        deps = lambda: self._inode_deps(path, follow)  # noqa: E731
        return self._changing(deps, deps)

    def _entry_deps(self, path: bytes, with_object: bool = True) -> list:
        """What changes with the directory entry at *path*: the entry, its
        directory, the object it names (and a directory's '..').

        *with_object* False, for a change that only succeeds when the name
        is new (mkdir, mknod, symlink, link's new name): nothing can have
        cached an object that did not exist, and looking a new name up costs
        a round trip to the MDS.
        """
        fs = self._fs()
        trimmed, entry = self._entry_of(path)
        if entry is None:
            raise ValueError("no single entry")
        deps: list = [entry, entry[0]]
        if not with_object:
            return deps
        try:
            ino, kind = ino_and_type(fs, trimmed)
        except Exception as exc:
            if getattr(exc, "errno", None) != errno.ENOENT:
                raise
        else:
            deps.append(ino)
            if kind == stat_mod.S_IFDIR:
                deps.append((ino, b".."))
        return deps

    def _inode_deps(self, path: bytes, follow: bool = True) -> list:
        """The inode *path* names now, and the entry naming it (so that answers
        keyed by this path go even if the name was re-bound meanwhile)."""
        ino = self._fs().statx(path, 0x100,
                               0 if follow else protocol.AT_SYMLINK_NOFOLLOW)["ino"]
        _, entry = self._entry_of(path)
        return [ino] if entry is None else [ino, entry]

    def _entry_of(self, path: bytes) -> tuple[bytes, tuple[int, bytes] | None]:
        """(*path* without trailing slashes, its entry (parent_ino, name)), the
        entry None for '/', '.' and '..', which name no single entry."""
        trimmed = path.rstrip(b"/") or b"/"
        parent, _, name = trimmed.rpartition(b"/")
        if name in (b"", b".", b".."):
            return trimmed, None
        # the parent is looked up following symlinks, as the change will be
        return trimmed, (self._fs().statx(parent or b"/", 0x100, 0)["ino"], name)

    def _fd_deps(self, fd: int) -> list:
        """The inode of an fd this session owns (callers check ownership first)."""
        ino = self.files[fd]
        if ino is None:
            ino = self.files[fd] = self._fs().fstat(fd).st_ino
        return [ino]

    # -- helpers --------------------------------------------------------------

    def _root_ino(self) -> int:
        """The inode of the mount's root (looked up once per mount)."""
        mount = self.mount
        if mount is None:
            raise SessionError(errno.ENOTCONN, f"not mounted (session is {self.state})")
        if mount.root_ino is None:
            mount.root_ino = ino_and_type(mount.fs, b"/")[0]
        return mount.root_ino

    def _fs(self) -> Any:
        mount = self.mount
        if mount is None:
            raise SessionError(errno.ENOTCONN, f"not mounted (session is {self.state})")
        return mount.fs

    def _path(self, path: bytes) -> bytes:
        """*path* made absolute against the session's cwd, repeated slashes collapsed.

        Collapsing is POSIX-neutral and keeps libcephfs safe: measured on
        16.2.15, mkdir/unlink/rename of "//" abort the process (ceph_assert
        in filepath::last_dentry) and mkdir("///a") hangs.
        """
        if b"//" in path:
            path = _collapse_slashes(path)
        if path[:1] == b"/":
            return path
        return (self.cwd if self.cwd != b"/" else b"") + b"/" + path

    def _fd(self, fd: int) -> int:
        if fd not in self.files:
            raise SessionError(errno.EBADF, f"fd {fd} is not open in this session",
                               ErrorSource.CEPHFS)
        return fd

    def _dir(self, handle: int) -> Any:
        try:
            return self.dirs[handle]
        except KeyError:
            raise SessionError(errno.EBADF, f"directory handle {handle} is not open "
                               "in this session") from None

    def _config(self) -> MountConfig:
        if self.config is None:
            if self._recipe_after_unmount is None:
                raise SessionError(errno.ENOTCONN, "no configuration yet: send CREATE first")
            auth_id, steps = self._recipe_after_unmount
            self.config = MountConfig.replay(self.server.backend, auth_id, steps,
                                             self.server.private_dir, self.peer)
            self._recipe_after_unmount = None
        return self.config

    def _configuring(self) -> MountConfig:
        if self.mount is not None:
            raise SessionError(errno.EISCONN, "already mounted: the configuration of a "
                               "mounted session cannot change")
        return self._config()

    def _release(self) -> None:
        """Close this session's files and directories and drop its mount."""
        mount, self.mount = self.mount, None
        if mount is None:
            return
        if self.notifier is not None and mount.tracker is not None:
            mount.tracker.forget(self.notifier)
        fs = mount.fs
        for fd in list(self.files):
            try:
                fs.close(fd)
            except Exception as exc:
                log.warning("%r: closing fd %d failed: %s", self, fd, exc)
        self.files.clear()
        for handle in list(self.dirs.values()):
            try:
                fs.closedir(handle)
            except Exception as exc:
                log.warning("%r: closing a directory failed: %s", self, exc)
        self.dirs.clear()
        self.cwd = b"/"
        self.server.mounts.release(mount)

    def close(self) -> None:
        """The connection is gone: release everything."""
        self._release()
        if self.window is not None:
            self.window.close()
            self.window = None
        for buffer in self.buffers.values():
            buffer.close()
        self.buffers.clear()
        if self.config is not None:
            self.config.discard()
            self.config = None
        if self.notifier is not None:
            for tracker in self.server.coherence.trackers() if self.server.coherence else ():
                tracker.forget(self.notifier)
            with self.send_lock:
                self.notifier.close()
            self.notifier = None

    # -- connection and status ---------------------------------------------------

    def op_ping(self) -> None:
        return None

    def op_status(self) -> dict:
        if self.peer.uid not in (0, self.server.uid):
            raise SessionError(errno.EPERM, "STATUS is for root and the daemon's own user")
        return self.server.status()

    # -- configuration and mount ---------------------------------------------

    def op_create(self, auth_id: bytes | None) -> None:
        if self.mount is not None:
            raise SessionError(errno.EISCONN, "already mounted: unmount before CREATE")
        if self.config is not None:
            self.config.discard()
        self._recipe_after_unmount = None
        self.initialized = False
        self.config = MountConfig(self.server.backend, auth_id, self.server.private_dir,
                                  self.peer)

    def op_conf_read_file(self, name: str, content: bytes) -> None:
        self._configuring().read_file(content)

    def op_conf_set(self, option: bytes, value: bytes) -> None:
        if self.mount is not None:
            # A shared mount's configuration belongs to all its sessions:
            # only a no-op set (the value it already has) is accepted.
            current = self.mount.fs.conf_get(option)
            if current is not None and current.encode() == value:
                return
            raise SessionError(errno.EPERM, "the configuration of a mounted (shared) "
                               "libcephfs instance cannot change")
        self._config().set(option, value)

    def op_conf_get(self, option: bytes) -> str | None:
        if self.mount is not None:
            return self.mount.fs.conf_get(option)
        return self._config().get(option)

    def op_conf_parse_argv(self, argv: list[bytes]) -> None:
        self._configuring().parse_argv(argv)

    def op_set_mount_timeout(self, timeout: int) -> None:
        self._configuring().set_mount_timeout(timeout)

    def op_set_session_timeout(self, timeout: int) -> None:
        self._configuring().set_session_timeout(timeout)

    def op_set_uuid(self, uuid: bytes) -> None:
        self._configuring().set_uuid(uuid)

    def op_init(self) -> None:
        config = self._configuring()
        if self.initialized:
            raise SessionError(errno.EISCONN, "already initialized")
        config.initialize()
        self.initialized = True

    def op_mount(self, root: bytes | None, fs_name: bytes | None) -> None:
        config = self._configuring()
        if root is not None and b"//" in root:
            root = _collapse_slashes(root)
        self.mount = self.server.mounts.acquire(config, root, fs_name)
        self.config = None
        self.initialized = True
        self.cwd = b"/"

    def op_unmount(self) -> None:
        self._fs()
        mount = self.mount
        assert mount is not None
        self._release()
        self._recipe_after_unmount = (mount.auth_id, mount.recipe)
        self.initialized = True

    def op_abort_conn(self) -> None:
        # Aborting the real mount's MDS sessions would hit every session
        # sharing it: this session just leaves it, without waiting.
        self.op_unmount()

    # -- per-session state -----------------------------------------------------

    def op_chdir(self, path: bytes) -> bytes:
        fs, p = self._fs(), self._path(path)
        # The session's cwd is kept resolved (no symlink, no '..') so that
        # ``cwd + '/' + rel`` names what the real cwd would, and getcwd()
        # answers what libcephfs would.
        try:
            _, target, _ = walk(fs, p, follow=True, full=False, root_ino=self._root_ino())
        except NegativeLookup as exc:
            raise SessionError(exc.errno, f"chdir: {p.decode(errors='replace')}: "
                               "no such file or directory", ErrorSource.CEPHFS) from None
        except Uncacheable:
            fs.stat(p)          # a shape like 'file/..': libcephfs's own error
            raise SessionError(errno.ENOTDIR, "chdir: not a directory",
                               ErrorSource.CEPHFS) from None
        if not stat_mod.S_ISDIR(fs.stat(target).st_mode):
            raise SessionError(errno.ENOTDIR, f"chdir: {target.decode(errors='replace')} "
                               "is not a directory", ErrorSource.CEPHFS)
        self.cwd = target
        return target

    def op_getcwd(self) -> bytes:
        self._fs()
        return self.cwd

    def op_umask(self, mode: int) -> int:
        # libcephfs stores its umask but does not apply it to open, mkdir or
        # mknod (it only feeds POSIX ACL inheritance), and ceph_umask()
        # returns the new mask, not the old one.  The session keeps its own
        # and never pushes it to the shared mount.
        self._fs()
        self.umask = mode
        return mode

    # -- metadata by path ----------------------------------------------------------

    def op_stat(self, path: bytes, follow: bool) -> Any:
        if self._caching() is None:
            return _stat_list(self._fs().stat(self._path(path), follow_symlink=follow))
        try:
            st, _, deps, seq0 = self._cached_walk(self._path(path), follow)
        except Uncacheable:
            return _stat_list(self._fs().stat(self._path(path), follow_symlink=follow))
        return self._answer(_stat_list(st), deps, seq0)

    def _answer(self, result: Any, deps: list, seq0: int) -> Any:
        deadline = self._register(deps, seq0)
        return result if deadline is None else Cacheable(result, deadline, deps, seq0)

    def op_statx(self, path: bytes, mask: int, flag: int) -> Any:
        fs = self._fs()
        if self._caching() is None or flag & protocol.AT_STATX_FORCE_SYNC:
            return _statx_wire(fs.statx(self._path(path), mask, flag))
        try:
            _, canonical, deps, seq0 = self._cached_walk(
                self._path(path), not flag & protocol.AT_SYMLINK_NOFOLLOW, full=False)
        except Uncacheable:
            return _statx_wire(fs.statx(self._path(path), mask, flag))
        result = _statx_wire(fs.statx(canonical, mask, flag | protocol.AT_SYMLINK_NOFOLLOW))
        return self._answer(result, deps, seq0)

    def op_setattrx(self, path: bytes, stx: dict, mask: int, flags: int) -> None:
        p = self._path(path)
        follow = not flags & protocol.AT_SYMLINK_NOFOLLOW
        with self._changing_path(p, follow):
            self._fs().setattrx(p, _stx_in(stx), mask, flags)

    def op_chmod(self, path: bytes, mode: int) -> None:
        p = self._path(path)
        with self._changing_path(p):
            self._fs().chmod(p, mode)

    def op_lchmod(self, path: bytes, mode: int) -> None:
        p = self._path(path)
        with self._changing_path(p, False):
            self._fs().lchmod(p, mode)

    def op_chown(self, path: bytes, uid: int, gid: int, follow: bool) -> None:
        p = self._path(path)
        with self._changing_path(p, follow):
            self._fs().chown(p, uid, gid, follow_symlink=follow)

    def op_utime(self, path: bytes, times: tuple | None) -> None:
        if times is not None and not all(type(t) is int for t in times):
            raise SessionError(errno.EINVAL, "UTIME times must be integers")
        p = self._path(path)
        with self._changing_path(p):
            self._fs().utime(p, times)

    def op_utimes(self, path: bytes, times: tuple | None, follow: bool) -> None:
        p = self._path(path)
        with self._changing_path(p, follow):
            self._fs().utimes(p, times, follow_symlink=follow)

    def op_statfs(self, path: bytes) -> dict:
        return self._fs().statfs(self._path(path))

    # -- namespace -------------------------------------------------------------------

    def op_mkdir(self, path: bytes, mode: int) -> None:
        p = self._path(path)
        with self._changing(lambda: self._entry_deps(p, with_object=False)):
            self._fs().mkdir(p, mode)

    def op_mkdirs(self, path: bytes, mode: int) -> None:
        p = self._path(path)
        with self._changing(lambda: self._prefix_deps(p)):
            self._fs().mkdirs(p, mode)

    def _prefix_deps(self, path: bytes) -> list:
        """Entries mkdirs may create: every prefix of *path* (the existing
        ones it leaves as they are)."""
        deps: list = []
        parts = [c for c in path.split(b"/") if c]
        for i in range(1, len(parts) + 1):
            deps.extend(self._entry_deps(b"/" + b"/".join(parts[:i]), with_object=False))
        return deps

    def op_rmdir(self, path: bytes) -> None:
        p = self._path(path)
        with self._changing(lambda: self._entry_deps(p)):
            self._fs().rmdir(p)

    def op_unlink(self, path: bytes) -> None:
        p = self._path(path)
        with self._changing(lambda: self._entry_deps(p)):
            self._fs().unlink(p)

    def op_rename(self, src: bytes, dst: bytes) -> None:
        s, d = self._path(src), self._path(dst)
        with self._changing(lambda: self._entry_deps(s) + self._entry_deps(d)):
            self._fs().rename(s, d)

    def op_link(self, existing: bytes, newname: bytes) -> None:
        e, n = self._path(existing), self._path(newname)
        with self._changing(lambda: self._inode_deps(e, False)
                            + self._entry_deps(n, with_object=False)):
            self._fs().link(e, n)

    def op_symlink(self, target: bytes, newname: bytes) -> None:
        # The target is stored as given: it is resolved when the link is followed.
        # An empty one (or one a C string cuts to nothing) hangs libcephfs
        # 16.2.15; Linux answers ENOENT.
        if not target or b"\0" in target:
            raise SessionError(errno.ENOENT, "symlink: empty target", ErrorSource.CEPHFS)
        n = self._path(newname)
        with self._changing(lambda: self._entry_deps(n, with_object=False)):
            self._fs().symlink(target, n)

    def op_readlink(self, path: bytes, size: int) -> Any:
        size = min(size, protocol.PATH_MAX)
        if self._caching() is None:
            return self._fs().readlink(self._path(path), size)
        try:
            _, canonical, deps, seq0 = self._cached_walk(self._path(path), False, full=False)
        except Uncacheable:
            return self._fs().readlink(self._path(path), size)
        target = self._fs().readlink(canonical, protocol.PATH_MAX)
        if len(target) > size:
            return target[:size]
        return self._answer(target, deps, seq0)

    def op_mknod(self, path: bytes, mode: int, rdev: int) -> None:
        # mknod(2) makes regular, device, FIFO and socket files only (EINVAL
        # otherwise).  libcephfs forwards any type, and the Pacific MDS
        # asserts (C_MDS_mknod_finish: ceph_assert(dir)) on S_IFDIR: found by
        # fuzzing, it took the MDS down for every client of the cluster.
        if stat_mod.S_IFMT(mode) not in _MKNOD_TYPES:
            raise SessionError(errno.EINVAL, f"mknod: file type {stat_mod.S_IFMT(mode):#o} "
                               "is not one mknod makes", ErrorSource.CEPHFS)
        p = self._path(path)
        with self._changing(lambda: self._entry_deps(p, with_object=False)):
            self._fs().mknod(p, mode, rdev)

    # -- open files --------------------------------------------------------------------

    def op_open(self, path: bytes, flags: int, mode: int) -> int:
        p = self._path(path)
        if flags & (os.O_CREAT | os.O_TRUNC):
            # What the name now opens is the object that may have changed
            # (truncated): its inode, from the new fd, costs no MDS lookup,
            # which a name about to be created would.
            opened: list[int] = []

            def opened_ino() -> list:
                if not opened:
                    return []
                # Kept for the fd: its writes name the inode without asking.
                ino = self.files[opened[0]] = self._fs().fstat(opened[0]).st_ino
                return [ino]

            with self._changing(lambda: self._entry_deps(p, with_object=False), opened_ino):
                fd = self._fs().open(p, flags, mode)
                self.files[fd] = None
                opened.append(fd)
        else:
            fd = self._fs().open(p, flags, mode)
            self.files[fd] = None
        return fd

    def op_open_read(self, path: bytes, flags: int, mode: int, readahead: int) -> Any:
        """OPEN of a file to read only, answering its fstat and, if it is a
        regular file of at most *readahead* bytes (capped), its whole
        content, both cacheable with the inode as their dep: ``[fd, stat,
        whole]`` and the content as data, ``whole`` true when it came.
        Without the right to cache, only ``[fd, nil, false]``: content that
        no invalidation covers is worth nothing to the client."""
        if Feature.OPEN_READ not in self.features:
            raise SessionError(errno.EPROTO, "OPEN_READ needs the OPEN_READ feature",
                               ErrorSource.DAEMON)
        if flags & (os.O_ACCMODE | os.O_CREAT | os.O_TRUNC) != os.O_RDONLY:
            raise RequestError("OPEN_READ opens read-only, without O_CREAT or O_TRUNC")
        fs = self._fs()
        tracker = self._caching()
        seq0 = tracker.begin() if tracker is not None else 0
        fd = fs.open(self._path(path), flags, mode)
        self.files[fd] = None
        try:
            st = fs.fstat(fd)
            self.files[fd] = st.st_ino
            data, whole = b"", False
            if stat_mod.S_ISREG(st.st_mode) and st.st_size <= min(readahead, OPEN_READ_MAX):
                want = st.st_size + 1       # one more: the end must be seen
                self._reserve(want)
                data = fs.read(fd, 0, want)
                whole = len(data) < want
                if not whole:               # it grew meanwhile: not worth sending
                    data = b""
        except Exception:   # noqa: BLE001 - the open stands; only its extras are lost
            log.debug("%r: OPEN_READ extras of fd %d failed", self, fd, exc_info=True)
            return [fd, None, False]
        deadline = self._register([st.st_ino], seq0) if tracker is not None else None
        if deadline is None:
            return [fd, None, False]
        return Cacheable([fd, _stat_list(st), whole], deadline, [st.st_ino], seq0, data)

    def op_close(self, fd: int) -> None:
        fs = self._fs()
        self._fd(fd)
        # The fd is gone after close() whatever it returns, as with close(2).
        del self.files[fd]
        fs.close(fd)

    def op_read(self, fd: int, offset: int, length: int) -> WithData:
        self._check_io_size(length)
        self._fd(fd)
        self._reserve(length)
        data = self._fs().read(fd, offset, length)
        return WithData(len(data), data)

    def _reserve(self, n: int) -> None:
        """Hold *n* bytes of the daemon's budget until this request's reply is sent."""
        self.reserve(n)

    def op_write(self, data: bytes | bytearray, fd: int, offset: int) -> int:
        fs = self._fs()
        if type(data) is not bytes:  # the binding takes bytes only
            data = bytes(data)
        self._fd(fd)
        with self._changing(lambda: self._fd_deps(fd)):
            return fs.write(fd, data, offset)

    # -- data windows (DATA_WINDOW): no copy in the daemon or the kernel ------------------

    def op_window(self) -> dict:
        if Feature.DATA_WINDOW not in self.features:
            raise SessionError(errno.EPROTO, "WINDOW needs the DATA_WINDOW feature")
        self._pointer()
        if self.window is None:
            self.window = self.server.windows.open(self.server.max_data)
        self.fds_to_send = [self.window.fd]
        return {"size": self.window.size}

    def _pointer(self) -> int:
        self._fs()
        assert self.mount is not None
        if not self.mount.pointer:
            raise SessionError(errno.EOPNOTSUPP, "data windows are not available on this "
                               "mount: send the data inline")
        return self.mount.pointer

    def _window_io(self, length: int, at: int) -> Window:
        window = self.window
        if window is None:
            raise SessionError(errno.EPROTO, "no data window: send WINDOW first")
        if at + length > window.size:
            raise SessionError(errno.EINVAL, f"I/O of {length} bytes at {at} does not fit "
                               f"the window's {window.size}: split it")
        return window

    def op_read_window(self, fd: int, offset: int, length: int, at: int) -> list:
        window = self._window_io(length, at)
        pointer = self._pointer()
        self._fd(fd)
        self._reserve(length)
        n = raw_read(pointer, fd, window.address + at, length, offset)
        # The client copies the data out after the reply, so only it can free
        # the pages: it is told to when the pool has no room to keep them.
        release = not window.keep()
        if n < 0:
            raise SessionError(-n, "error in read", ErrorSource.CEPHFS)
        return [n, release]

    def op_write_window(self, fd: int, offset: int, length: int, at: int) -> int:
        window = self._window_io(length, at)
        pointer = self._pointer()
        self._fd(fd)
        self._reserve(length)
        try:
            with self._changing(lambda: self._fd_deps(fd)):
                n = raw_write(pointer, fd, window.address + at, length, offset)
        finally:
            if not window.keep():
                window.release(at, length)       # libcephfs has copied the data
        if n < 0:
            raise SessionError(-n, "error in write", ErrorSource.CEPHFS)
        return n

    # -- read buffers (READ_BUFFERS): the client hands out the daemon's read ---------------

    def op_buffer(self, size: int) -> dict:
        if Feature.READ_BUFFERS not in self.features:
            raise SessionError(errno.EPROTO, "BUFFER needs the READ_BUFFERS feature")
        self._pointer()
        if not 0 < size <= DATA_CEILING:
            raise SessionError(errno.EINVAL, f"a read buffer holds 1 to {DATA_CEILING} bytes, "
                               f"not {size}")
        if len(self.buffers) >= MAX_BUFFERS:
            raise SessionError(errno.ENOBUFS, f"this connection has {MAX_BUFFERS} read "
                               f"buffers already: free one first")
        # One connection takes at most a quarter of the cap (or two buffers of
        # max_data), so a greedy client leaves buffers for others.
        mine = sum(b.size for b in self.buffers.values())
        allowed = max(self.server.buffers.cap // 4, 2 * (self.server.max_data + 2 * PAGE))
        if mine + size > allowed:
            raise SessionError(errno.ENOBUFS, f"this connection holds {mine} bytes of read "
                               f"buffers; {size} more would pass its share, {allowed}")
        buffer = self.server.buffers.open(size)
        if buffer is None:
            refused = self.server.buffers.refused
            if refused & (refused - 1) == 0:        # the 1st, 2nd, 4th, 8th ... time
                log.info("%r: read buffers all taken (%s); refused %d time(s) so far: "
                         "raise --max-read-buffers for large reads without a copy",
                         self, self.server.buffers, refused)
            raise SessionError(errno.ENOBUFS, "the daemon's read buffers are all taken "
                               "(--max-read-buffers): read through the window")
        bid = self._next_buffer
        self._next_buffer += 1
        self.buffers[bid] = buffer
        # Sent once, then closed: the mapping keeps the memfd alive, and two
        # thousand clients must not cost the daemon eight descriptors each.
        fd = buffer.detach_fd()
        self.fds_to_send, self.fds_to_close = [fd], [fd]
        return {"id": bid, "size": buffer.size}

    def _buffer(self, bid: int) -> ReadBuffer:
        buffer = self.buffers.get(bid)
        if buffer is None:
            raise SessionError(errno.EINVAL, f"no read buffer {bid} on this connection")
        return buffer

    def op_free_buffer(self, bid: int) -> None:
        self._buffer(bid).close()
        del self.buffers[bid]

    def _buffer_io(self, what: str, bid: int, length: int, at: int) -> ReadBuffer:
        buffer = self._buffer(bid)
        self._check_io_size(length)
        if at + length > buffer.size:
            raise SessionError(errno.EINVAL, f"a {what} of {length} bytes at {at} does not "
                               f"fit read buffer {bid} of {buffer.size} bytes")
        return buffer

    def op_write_buffer(self, fd: int, offset: int, length: int, bid: int, at: int) -> int:
        buffer = self._buffer_io("write", bid, length, at)
        pointer = self._pointer()
        self._fd(fd)
        self._reserve(length)
        with self._changing(lambda: self._fd_deps(fd)):
            n = raw_write(pointer, fd, buffer.address + at, length, offset)
        if n < 0:
            raise SessionError(-n, "error in write", ErrorSource.CEPHFS)
        return n

    def op_read_buffer(self, fd: int, offset: int, length: int, bid: int, at: int) -> int:
        buffer = self._buffer_io("read", bid, length, at)
        pointer = self._pointer()
        self._fd(fd)
        # The buffer's bytes were counted when it was made; what libcephfs may
        # fetch from the OSDs for this read is counted as for any read.
        self._reserve(length)
        n = raw_read(pointer, fd, buffer.address + at, length, offset)
        if n < 0:
            raise SessionError(-n, "error in read", ErrorSource.CEPHFS)
        return n

    def op_preadv(self, fd: int, lengths: list[int], offset: int) -> WithData:
        self._check_io_size(sum(lengths))
        self._fd(fd)
        self._reserve(sum(lengths))
        buffers = [bytearray(n) for n in lengths]
        n = self._fs().preadv(self._fd(fd), buffers, offset)
        return WithData(n, b"".join(buffers)[:n])

    def op_pwritev(self, data: bytes | bytearray, fd: int, lengths: list[int],
                   offset: int) -> int:
        if sum(lengths) != len(data):
            raise SessionError(errno.EINVAL, f"PWRITEV lengths add up to {sum(lengths)} "
                               f"but the data section has {len(data)} bytes")
        view = memoryview(data)
        buffers, pos = [], 0
        for n in lengths:
            buffers.append(bytes(view[pos:pos + n]))
            pos += n
        self._fd(fd)
        with self._changing(lambda: self._fd_deps(fd)):
            return self._fs().pwritev(fd, buffers, offset)

    def _check_io_size(self, length: int) -> None:
        if length > self.server.max_data:
            raise SessionError(errno.EINVAL, f"I/O of {length} bytes exceeds max_data "
                               f"{self.server.max_data}: split it")

    def op_lseek(self, fd: int, offset: int, whence: int) -> int:
        return self._fs().lseek(self._fd(fd), offset, whence)

    def op_fsync(self, fd: int, syncdataonly: int) -> None:
        self._fs().fsync(self._fd(fd), syncdataonly)

    def op_fstat(self, fd: int) -> Any:
        tracker = self._caching()
        seq0 = tracker.begin() if tracker is not None else 0
        st = self._fs().fstat(self._fd(fd))
        self.files[fd] = st.st_ino
        if tracker is None:
            return _stat_list(st)
        return self._answer(_stat_list(st), [st.st_ino], seq0)

    def _fd_change(self, fd: int, call: Callable[..., Any], *args: Any) -> Any:
        """A change of an open file's inode (attributes, size, xattrs)."""
        self._fd(fd)
        with self._changing(lambda: self._fd_deps(fd)):
            return call(fd, *args)

    def op_fsetattrx(self, fd: int, stx: dict, mask: int) -> None:
        self._fd_change(fd, self._fs().fsetattrx, _stx_in(stx), mask)

    def op_fchmod(self, fd: int, mode: int) -> None:
        self._fd_change(fd, self._fs().fchmod, mode)

    def op_fchown(self, fd: int, uid: int, gid: int) -> None:
        self._fd_change(fd, self._fs().fchown, uid, gid)

    def op_futime(self, fd: int, times: tuple | None) -> None:
        if times is not None and not all(type(t) is int for t in times):
            raise SessionError(errno.EINVAL, "FUTIME times must be integers")
        self._fd_change(fd, self._fs().futime, times)

    def op_futimes(self, fd: int, times: tuple | None) -> None:
        self._fd_change(fd, self._fs().futimes, times)

    def op_futimens(self, fd: int, times: tuple | None) -> None:
        self._fd_change(fd, self._fs().futimens, times)

    def op_fallocate(self, fd: int, offset: int, length: int, mode: int) -> None:
        self._fd_change(fd, self._fs().fallocate, offset, length, mode)

    def op_flock(self, fd: int, operation: int, owner: int) -> int:
        return self._fs().flock(self._fd(fd), operation, owner)

    def op_lazyio(self, fd: int, enable: int) -> None:
        self._fs().lazyio(self._fd(fd), enable)

    def op_lazyio_propagate(self, fd: int, offset: int, count: int) -> None:
        self._fs().lazyio_propagate(self._fd(fd), offset, count)

    def op_lazyio_synchronize(self, fd: int, offset: int, count: int) -> None:
        self._fs().lazyio_synchronize(self._fd(fd), offset, count)

    # -- directories ---------------------------------------------------------------------

    def op_opendir(self, path: bytes) -> list:
        fs = self._fs()
        handle = fs.opendir(self._path(path))
        return [self._hold_dir(handle), fs.telldir(handle)]

    def _hold_dir(self, handle: Any) -> int:
        """Number an open directory of this session's (what OPENDIR returns)."""
        hid = self._next_dir
        self._next_dir += 1
        self.dirs[hid] = handle
        return hid

    def op_readdir(self, hid: int, max_entries: int) -> list:
        return _read_entries(self._fs(), self._dir(hid), max_entries)

    def op_listdir(self, path: bytes, max_entries: int) -> Any:
        """OPENDIR and a first READDIR in one call.  A directory read to its
        end within *max_entries* is closed at once (handle 0), and that
        listing may be cached: its deps are the walk to the directory, which
        names the directory's inode, and every entry change in a directory
        invalidates that inode.  The walk comes after the listing, so a
        directory too large to list whole costs none; a change made meanwhile
        (through the daemon) makes the fill refused, and a walk that ends
        elsewhere than the listed directory (re-bound by another client)
        leaves the listing uncached."""
        if Feature.LISTDIR not in self.features:
            raise SessionError(errno.EPROTO, "LISTDIR needs the LISTDIR feature")
        fs, p = self._fs(), self._path(path)
        tracker = self._caching()
        seq0 = tracker.begin() if tracker is not None else None
        handle = fs.opendir(p)
        try:
            pos = fs.telldir(handle)
            entries, eof = _read_entries(fs, handle, max_entries)
        except BaseException:
            fs.closedir(handle)
            raise
        if not eof:
            return [self._hold_dir(handle), pos, entries, False]
        fs.closedir(handle)
        result = [0, pos, entries, True]
        if seq0 is None:
            return result
        try:
            _, _, deps = walk(fs, p, True, full=False, root_ino=self._root_ino())
        except Exception:  # noqa: BLE001 - the listing stands; only its caching is off
            return result
        if deps[-1] not in [e[0] for e in entries if e[4] == b"."]:
            return result
        return self._answer(result, deps, seq0)

    def op_closedir(self, hid: int) -> None:
        fs, handle = self._fs(), self._dir(hid)
        del self.dirs[hid]
        fs.closedir(handle)

    def op_rewinddir(self, hid: int) -> int:
        fs, handle = self._fs(), self._dir(hid)
        fs.rewinddir(handle)
        return fs.telldir(handle)

    def op_telldir(self, hid: int) -> int:
        fs, handle = self._fs(), self._dir(hid)
        return fs.telldir(handle)

    def op_seekdir(self, hid: int, offset: int) -> None:
        fs, handle = self._fs(), self._dir(hid)
        fs.seekdir(handle, offset)

    # -- extended attributes -------------------------------------------------------------

    def op_getxattr(self, path: bytes, name: bytes, size: int, follow: bool) -> bytes:
        return self._fs().getxattr(self._path(path), name, min(size, protocol.MAX_XATTR),
                                   follow_symlink=follow)

    def op_fgetxattr(self, fd: int, name: bytes, size: int) -> bytes:
        return self._fs().fgetxattr(self._fd(fd), name, min(size, protocol.MAX_XATTR))

    def op_setxattr(self, path: bytes, name: bytes, value: bytes, flags: int,
                    follow: bool) -> None:
        p = self._path(path)
        with self._changing_path(p, follow):
            self._fs().setxattr(p, name, value, flags, follow_symlink=follow)

    def op_fsetxattr(self, fd: int, name: bytes, value: bytes, flags: int) -> None:
        self._fd_change(fd, self._fs().fsetxattr, name, value, flags)

    def op_listxattr(self, path: bytes, size: int, follow: bool) -> list:
        return list(self._fs().listxattr(self._path(path), min(size, protocol.MAX_XATTR),
                                         follow_symlink=follow))

    def op_flistxattr(self, fd: int, size: int) -> list:
        return list(self._fs().flistxattr(self._fd(fd), min(size, protocol.MAX_XATTR)))

    def op_removexattr(self, path: bytes, name: bytes, follow: bool) -> None:
        p = self._path(path)
        with self._changing_path(p, follow):
            self._fs().removexattr(p, name, follow_symlink=follow)

    def op_fremovexattr(self, fd: int, name: bytes) -> None:
        self._fd_change(fd, self._fs().fremovexattr, name)

    # -- layout, pools, snapshots, cluster ---------------------------------------------

    def op_get_layout(self, fd: int) -> dict:
        return self._fs().get_layout(self._fd(fd))

    def op_get_file_replication(self, fd: int) -> int:
        return self._fs().get_file_replication(self._fd(fd))

    def op_get_path_replication(self, path: bytes) -> int:
        return self._fs().get_path_replication(self._path(path))

    def op_get_pool_id(self, name: bytes) -> int:
        return self._fs().get_pool_id(name)

    def op_get_pool_replication(self, pool_id: int) -> int:
        return self._fs().get_pool_replication(pool_id)

    def op_get_default_pool(self) -> dict:
        return self._fs().get_default_pool()

    def op_mksnap(self, path: bytes, name: bytes, mode: int, metadata: dict) -> int:
        try:
            return self._fs().mksnap(self._path(path), name, mode, metadata)
        finally:
            self._flush_caches()

    def op_rmsnap(self, path: bytes, name: bytes) -> int:
        try:
            return self._fs().rmsnap(self._path(path), name)
        finally:
            self._flush_caches()

    def _flush_caches(self) -> None:
        # Snapshots change what '.snap' holds under any directory: too broad
        # to describe by deps, and rare: every cache of the filesystem goes.
        tracker = self._tracker()
        if tracker is not None:
            tracker.flush_all()

    def op_snap_info(self, path: bytes) -> dict:
        return self._fs().snap_info(self._path(path))

    def op_sync_fs(self) -> None:
        self._fs().sync_fs()

    def op_get_fscid(self) -> int:
        return self._fs().get_fscid()

    def op_get_instance_id(self) -> int:
        if self.mount is None and self.initialized and self.config is not None:
            return self.config.fs.get_instance_id()
        return self._fs().get_instance_id()

    def op_get_addrs(self) -> str:
        return self._fs().get_addrs()

    def op_get_cap_return_timeout(self) -> int:
        return self._fs().get_cap_return_timeout()

    def op_mds_command(self, mds_spec: bytes, command: bytes, input_data: bytes) -> list:
        with self._changing(lambda: None):
            return list(self._fs().mds_command(mds_spec, command, input_data))

    def op_debug_get_fd_caps(self, fd: int) -> int:
        return self._fs().debug_get_fd_caps(self._fd(fd))

    def op_debug_get_file_caps(self, path: bytes) -> int:
        return self._fs().debug_get_file_caps(self._path(path))


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op {op}"


_HANDLERS: dict[Op, Callable[..., Any]] = {
    op: getattr(Session, f"op_{op.name.lower()}") for op in Op if op is not Op.HELLO}
_TAKES_DATA = frozenset({Op.WRITE, Op.PWRITEV})
#: Ops that run once or twice per session and go deep into libcephfs
#: (instance creation, config parsing, mount, unmount).  Run in a short-lived
#: thread of their own, so the stack pages they touch are not kept resident
#: by the long-lived connection thread: measured, 118 KiB of daemon RSS per
#: idle mounted connection with them inline, 56 KiB without.  Not a pool: a
#: mount that hangs on an unreachable cluster must not hold up anyone else's.
_ELSEWHERE = frozenset({Op.CREATE, Op.CONF_READ_FILE, Op.CONF_SET, Op.CONF_GET,
                        Op.CONF_PARSE_ARGV, Op.INIT, Op.MOUNT, Op.UNMOUNT, Op.ABORT_CONN})


def _in_own_thread(placement: Placement, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a new thread, this one waiting: its result or its exception.

    The thread may use every CPU the daemon may: threads libcephfs creates
    in it (a mount's messengers) inherit that.
    """
    outcome: list = []

    def run() -> None:
        placement.free_thread()
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=f"{threading.current_thread().name}-config",
                              daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value
    raise value
