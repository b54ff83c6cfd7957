"""The libcephfsd wire protocol: framing, messages, handshake, limits.

Pure code: bytes in, messages out; messages in, bytes out.  No sockets, no
threads, no ``cephfs``.  The daemon and the client library are thin shells
around this module, and ``protocol.md`` at the repository root is its
specification (a test checks that the tables there match the enums here).

Frame::

    +-------------+-------------+------------------+------------------+
    | body_len    | data_len    | body             | data             |
    | u32, big e. | u32, big e. | msgpack, body_len| raw, data_len    |
    +-------------+-------------+------------------+------------------+

The body is one msgpack array: a :class:`Request`, :class:`Reply` or
:class:`Event`.  ``data`` carries bulk bytes (file data) without msgpack
copies.

Errors (see ``protocol.md`` "Bad input")::

    ProtocolError
    ├── LocalProtocolError     we were about to send something invalid
    └── RemoteProtocolError    the peer sent something invalid
        ├── FrameError         framing is broken: the connection must close
        └── RequestError       one request is bad: reply with .errno, go on
"""

from __future__ import annotations

import enum
import errno as _errno
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

PROTOCOL_VERSION = 1
MAGIC = "libcephfsd"

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
#: Largest msgpack body either side accepts.  Bodies carry paths, names,
#: attributes and xattr values; bulk data travels in the data section.
MAX_BODY = 1 << 20
#: No daemon may advertise a larger data section than this.
DATA_CEILING = 64 << 20
#: What a daemon advertises unless told otherwise (``--max-io-size``).
DEFAULT_MAX_DATA = 4 << 20
#: Data bytes allowed before the handshake told the client the real limit.
HANDSHAKE_MAX_DATA = 0
PATH_MAX = 4096
#: statx flags the daemon looks at (values of the cephfs binding).
AT_SYMLINK_NOFOLLOW = 0x100
AT_STATX_FORCE_SYNC = 0x2000
#: Largest xattr value or name list the daemon reads (CephFS's own limit is 64 KiB).
MAX_XATTR = 64 << 10
#: Largest number of entries one READDIR may ask for.
READDIR_MAX_BATCH = 1024
#: Largest file whose content OPEN_READ sends with the open.
OPEN_READ_MAX = 64 << 10


class MsgType(enum.IntEnum):
    REQUEST = 0
    REPLY = 1
    EVENT = 2


class Feature(enum.IntFlag):
    """Feature bits negotiated in the handshake: the reply holds the ones both sides have."""

    #: Client-side attribute/lookup cache with daemon-pushed invalidations,
    #: granted when the daemon runs with --enable-client-cache.
    CLIENT_CACHE = 0x1
    #: A memory window shared with the daemon for large reads and writes
    #: (WINDOW, READ_WINDOW, WRITE_WINDOW).
    DATA_WINDOW = 0x2
    #: LISTDIR: open, read and (at the end) close a directory in one call.
    LISTDIR = 0x4
    #: Read buffers: memfds the daemon reads into and the client hands out as
    #: the result, without a copy (BUFFER, FREE_BUFFER, READ_BUFFER; and
    #: WRITE_BUFFER, which writes such a result back out without a copy).
    READ_BUFFERS = 0x8
    #: A table of answers shared by all the sessions of one mount, read by
    #: clients in shared memory (SHARED_CACHE); needs CLIENT_CACHE.
    SHARED_CACHE = 0x10
    #: OPEN_READ: a read-only open that also answers the file's fstat and, for
    #: a small file, its content, for the client to cache; needs CLIENT_CACHE.
    OPEN_READ = 0x20


SUPPORTED_FEATURES = (Feature.CLIENT_CACHE | Feature.DATA_WINDOW | Feature.LISTDIR
                      | Feature.READ_BUFFERS | Feature.SHARED_CACHE | Feature.OPEN_READ)


class EventKind(enum.IntEnum):
    #: The daemon is about to close the connection: payload ``[errno, message]``.
    GOODBYE = 1
    #: Drop cached answers depending on any of these: payload ``[dep, ...]``.
    INVALIDATE = 2


class Op(enum.IntEnum):
    """Request operations.  Numbers are part of the protocol: never reuse one.

    The ops mirror the cephfs binding's methods; where the binding implements
    a method by calling another (``lstat`` is ``stat(follow_symlink=False)``,
    ``truncate`` is ``setattrx`` of the size), so does the client library.
    """

    # connection
    HELLO = 1
    PING = 2
    STATUS = 3
    WINDOW = 4
    BUFFER = 5
    FREE_BUFFER = 6
    SHARED_CACHE = 7
    # configuration and mount: the session's life cycle
    CREATE = 10
    CONF_READ_FILE = 11
    CONF_SET = 12
    CONF_GET = 13
    CONF_PARSE_ARGV = 14
    SET_MOUNT_TIMEOUT = 15
    SET_SESSION_TIMEOUT = 16
    SET_UUID = 17
    INIT = 18
    MOUNT = 19
    UNMOUNT = 20
    ABORT_CONN = 21
    # per-session state
    CHDIR = 30
    GETCWD = 31
    UMASK = 32
    # metadata by path
    STAT = 40
    STATX = 41
    SETATTRX = 42
    CHMOD = 43
    LCHMOD = 44
    CHOWN = 45
    UTIME = 46
    UTIMES = 47
    STATFS = 48
    # namespace
    MKDIR = 60
    MKDIRS = 61
    RMDIR = 62
    UNLINK = 63
    RENAME = 64
    LINK = 65
    SYMLINK = 66
    READLINK = 67
    MKNOD = 68
    # open files
    OPEN = 80
    CLOSE = 81
    READ = 82
    WRITE = 83
    PREADV = 84
    PWRITEV = 85
    LSEEK = 86
    FSYNC = 87
    FSTAT = 88
    FSETATTRX = 89
    FCHMOD = 90
    FCHOWN = 91
    FUTIME = 92
    FUTIMES = 93
    FUTIMENS = 94
    FALLOCATE = 95
    FLOCK = 96
    LAZYIO = 97
    LAZYIO_PROPAGATE = 98
    LAZYIO_SYNCHRONIZE = 99
    READ_WINDOW = 100
    WRITE_WINDOW = 101
    READ_BUFFER = 102
    WRITE_BUFFER = 103
    OPEN_READ = 104
    # directories
    OPENDIR = 110
    READDIR = 111
    CLOSEDIR = 112
    REWINDDIR = 113
    TELLDIR = 114
    SEEKDIR = 115
    LISTDIR = 116
    # extended attributes
    GETXATTR = 120
    FGETXATTR = 121
    SETXATTR = 122
    FSETXATTR = 123
    LISTXATTR = 124
    FLISTXATTR = 125
    REMOVEXATTR = 126
    FREMOVEXATTR = 127
    # layout, pools, snapshots, cluster
    GET_LAYOUT = 140
    GET_FILE_REPLICATION = 141
    GET_PATH_REPLICATION = 142
    GET_POOL_ID = 143
    GET_POOL_REPLICATION = 144
    GET_DEFAULT_POOL = 145
    MKSNAP = 146
    RMSNAP = 147
    SNAP_INFO = 148
    SYNC_FS = 149
    GET_FSCID = 150
    GET_INSTANCE_ID = 151
    GET_ADDRS = 152
    GET_CAP_RETURN_TIMEOUT = 153
    MDS_COMMAND = 154
    DEBUG_GET_FD_CAPS = 155
    DEBUG_GET_FILE_CAPS = 156


class ErrorSource(enum.IntEnum):
    """Who refused a request: the second element of an error reply's result."""

    #: libcephfs returned the error: the client may word it as the binding does.
    CEPHFS = 0
    #: the daemon refused (bad request, unknown handle, guarded option, ...).
    DAEMON = 1


# --------------------------------------------------------------------------
# errors


class ProtocolError(Exception):
    """A violation of this protocol.  ``errno`` is what a reply should carry."""

    errno = _errno.EPROTO

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        if errno is not None:
            self.errno = errno


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class FrameError(RemoteProtocolError):
    """Framing or message structure is broken: the connection cannot go on."""


class RequestError(RemoteProtocolError):
    """One well-framed request is invalid: reply with ``errno``, keep the connection."""

    errno = _errno.EINVAL

    def __init__(self, message: str, errno: int | None = None, request_id: int = 0):
        super().__init__(message, errno)
        self.request_id = request_id


# --------------------------------------------------------------------------
# messages


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    op: int
    args: list = field(default_factory=list)
    data: bytes | bytearray | memoryview = b""

    def __post_init__(self) -> None:
        if not _is_u32(self.id):
            raise LocalProtocolError(f"request id must be a u32, not {self.id!r}")
        if not isinstance(self.args, (list, tuple)):
            raise LocalProtocolError("request args must be a list")


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    errno: int = 0
    #: The op's result when ``errno`` is 0, else ``[message, ErrorSource]``.
    result: Any = None
    data: bytes | bytearray | memoryview = b""
    #: For a cacheable answer (CLIENT_CACHE): ``[deadline, [dep, ...]]``.
    meta: Any = None

    def __post_init__(self) -> None:
        if not _is_u32(self.id):
            raise LocalProtocolError(f"reply id must be a u32, not {self.id!r}")
        if not isinstance(self.errno, int) or self.errno < 0:
            raise LocalProtocolError(f"reply errno must be a non-negative int, not {self.errno!r}")


@dataclass(frozen=True, slots=True)
class Event:
    kind: int
    payload: Any = None


Message = Request | Reply | Event


def _is_u32(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 0xFFFFFFFF


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def encode(message: Message, max_data: int = DATA_CEILING) -> list[bytes | bytearray | memoryview]:
    """Return the buffers that make up *message*'s frame, ready for ``sendmsg``.

    Raises LocalProtocolError if the body or data exceed the limits.
    """
    if isinstance(message, Request):
        body = [MsgType.REQUEST, message.id, int(message.op), list(message.args)]
        data = message.data
    elif isinstance(message, Reply):
        body = [MsgType.REPLY, message.id, message.errno, message.result]
        if message.meta is not None:
            body.append(message.meta)
        data = message.data
    elif isinstance(message, Event):
        body = [MsgType.EVENT, int(message.kind), message.payload]
        data = b""
    else:
        raise LocalProtocolError(f"not a message: {message!r}")
    try:
        packed = _packb(body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {message!r}: {exc}") from exc
    if len(packed) > MAX_BODY:
        raise LocalProtocolError(f"message body of {len(packed)} bytes exceeds {MAX_BODY}")
    data_len = len(data)
    if data_len > max_data:
        raise LocalProtocolError(f"data section of {data_len} bytes exceeds {max_data}")
    head = HEADER.pack(len(packed), data_len) + packed
    return [head, data] if data_len else [head]


def encode_bytes(message: Message, max_data: int = DATA_CEILING) -> bytes:
    return b"".join(encode(message, max_data))


def parse_header(header: bytes | bytearray | memoryview, max_data: int,
                 max_body: int = MAX_BODY) -> tuple[int, int]:
    """(body_len, data_len) from an 8-byte frame header.  Raises FrameError."""
    body_len, data_len = HEADER.unpack(header)
    if not 0 < body_len <= max_body:
        raise FrameError(f"frame body length {body_len} outside 1..{max_body}", _errno.EMSGSIZE)
    if data_len > max_data:
        raise FrameError(f"frame data length {data_len} exceeds the limit {max_data}",
                         _errno.EMSGSIZE)
    return body_len, data_len


def decode_body(body: bytes | bytearray | memoryview,
                data: bytes | bytearray | memoryview = b"") -> Message:
    """The message in a frame's msgpack *body*, with its *data* section.

    Raises FrameError when the body is not a message at all (the connection
    cannot go on) and RequestError when it is a request with a usable id but a
    malformed op or argument list.
    """
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise FrameError(f"body is not valid msgpack: {exc}") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise FrameError("body must be a msgpack array starting with a message type")
    kind = obj[0]
    if kind == MsgType.REQUEST and len(obj) == 4:
        _, rid, op, args = obj
        if not _is_u32(rid):
            raise FrameError(f"request id must be a u32, not {rid!r}")
        if type(op) is not int:
            raise RequestError(f"op must be an integer, not {op!r}", request_id=rid)
        if not isinstance(args, list):
            raise RequestError("request args must be an array", request_id=rid)
        return Request(rid, op, args, data)
    if kind == MsgType.REPLY and len(obj) in (4, 5):
        rid, err, result = obj[1], obj[2], obj[3]
        if not _is_u32(rid) or type(err) is not int or err < 0:
            raise FrameError("reply needs a u32 id and a non-negative errno")
        return Reply(rid, err, result, data, obj[4] if len(obj) == 5 else None)
    if kind == MsgType.EVENT and len(obj) == 3:
        if type(obj[1]) is not int:
            raise FrameError("event kind must be an integer")
        return Event(obj[1], obj[2])
    raise FrameError(f"unknown message type {kind} or wrong length {len(obj)}")


class FrameDecoder:
    """Turns a byte stream into messages (push style).

    ``feed()`` bytes as they arrive, then call ``next_message()`` until it
    returns None.  After a FrameError the stream cannot be trusted and the
    decoder stays broken.  ``max_data`` can be raised after the handshake.
    """

    __slots__ = ("_buf", "max_data", "_broken")

    def __init__(self, max_data: int = DATA_CEILING):
        self._buf = bytearray()
        self.max_data = max_data
        self._broken: FrameError | None = None

    def __repr__(self) -> str:
        return (f"<FrameDecoder buffered={len(self._buf)} max_data={self.max_data}"
                f"{' broken' if self._broken else ''}>")

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next_message(self) -> Message | None:
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        try:
            body_len, data_len = parse_header(buf[:HEADER_SIZE], self.max_data)
        except FrameError as exc:
            self._broken = exc
            raise
        end = HEADER_SIZE + body_len + data_len
        if len(buf) < end:
            return None
        body = bytes(buf[HEADER_SIZE:HEADER_SIZE + body_len])
        data = bytes(buf[HEADER_SIZE + body_len:end])
        del buf[:end]
        try:
            return decode_body(body, data)
        except FrameError as exc:
            self._broken = exc
            raise


# --------------------------------------------------------------------------
# handshake


def hello_request(rid: int, features: Feature, options: dict | None = None) -> Request:
    args: list = [MAGIC, PROTOCOL_VERSION, int(features)]
    if options:
        args.append(options)
    return Request(rid, Op.HELLO, args)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """What the daemon answers to HELLO."""

    version: int
    features: Feature
    max_body: int
    max_data: int
    session: int
    server: str
    #: (major, minor, extra) of the daemon's libcephfs: what version() answers.
    ceph_version: tuple[int, int, int]
    #: With CLIENT_CACHE: {"entries": int, "ttl": float} (a shared page comes along).
    cache: dict | None = None

    def to_wire(self) -> dict:
        wire = {"version": self.version, "features": int(self.features),
                "max_body": self.max_body, "max_data": self.max_data,
                "session": self.session, "server": self.server,
                "ceph_version": list(self.ceph_version)}
        if self.cache is not None:
            wire["cache"] = self.cache
        return wire

    @classmethod
    def from_wire(cls, obj: Any) -> ServerHello:
        try:
            hello = cls(int(obj["version"]), Feature(obj["features"]), int(obj["max_body"]),
                        int(obj["max_data"]), int(obj["session"]), str(obj["server"]),
                        _version_triple(obj["ceph_version"]), obj.get("cache"))
        except (TypeError, KeyError, ValueError) as exc:
            raise RemoteProtocolError(f"malformed HELLO reply: {obj!r}") from exc
        if not 0 < hello.max_data <= DATA_CEILING or not 0 < hello.max_body <= MAX_BODY:
            raise RemoteProtocolError(f"HELLO reply has limits out of range: {obj!r}")
        return hello


def _version_triple(value: Any) -> tuple[int, int, int]:
    major, minor, extra = (int(x) for x in value)
    return major, minor, extra


#: HELLO options a client may send, and their kinds.
HELLO_OPTIONS = {"cache_entries": int}


def check_hello(args: list) -> tuple[Feature, dict]:
    """Validate HELLO arguments from a client: (features it asks for, options)."""
    if len(args) not in (3, 4) or args[0] != MAGIC:
        raise RequestError(f"HELLO takes [{MAGIC!r}, version, features, options?]",
                           _errno.EPROTO)
    version, features = args[1], args[2]
    options = args[3] if len(args) == 4 else {}
    if not isinstance(options, dict) or any(
            type(options.get(k, kind())) is not kind for k, kind in HELLO_OPTIONS.items()):
        raise RequestError("HELLO options must be a map of known options", _errno.EPROTO)
    if type(version) is not int or type(features) is not int or features < 0:
        raise RequestError("HELLO version and features must be non-negative integers",
                           _errno.EPROTO)
    if version != PROTOCOL_VERSION:
        raise RequestError(f"protocol version {version} is not supported "
                           f"(this daemon speaks {PROTOCOL_VERSION})", _errno.EPROTONOSUPPORT)
    return Feature(features) & SUPPORTED_FEATURES, options


# --------------------------------------------------------------------------
# argument schemas
#
# Each op's arguments are a msgpack array whose elements have these kinds.
# ``check_args`` validates and normalises them (str paths become UTF-8
# bytes), raising RequestError(EINVAL) on anything else.

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


def _int(v: Any) -> int:
    if type(v) is not int or not INT64_MIN <= v <= INT64_MAX:
        raise TypeError("an int64")
    return v


def _uint(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= UINT64_MAX:
        raise TypeError("a uint64")
    return v


def _bytes(v: Any) -> bytes:
    if isinstance(v, str):
        v = v.encode("utf-8")
    if not isinstance(v, bytes):
        raise TypeError("bytes")
    return v


def _path(v: Any) -> bytes:
    v = _bytes(v)
    if not v or len(v) > PATH_MAX or b"\0" in v:
        raise TypeError(f"a path (1..{PATH_MAX} bytes, no NUL)")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _number(v: Any) -> int | float:
    if type(v) not in (int, float):
        raise TypeError("a number")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError("a boolean")
    return v


def _optional(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        return None if v is None else kind(v)
    check.__name__ = f"optional {kind.__name__}"
    return check


def _list_of(kind: Callable[[Any], Any], max_len: int = 1024) -> Callable[[Any], Any]:
    def check(v: Any) -> list:
        if not isinstance(v, list) or len(v) > max_len:
            raise TypeError(f"an array of at most {max_len}")
        return [kind(x) for x in v]
    return check


def _times(v: Any) -> tuple | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2:
        raise TypeError("null or [atime, mtime]")
    return (_number(v[0]), _number(v[1]))


#: Fields of a SETATTRX/FSETATTRX map: integers, and times as seconds since
#: the epoch (int or float, sub-second kept).
STX_INT_FIELDS = ("mode", "uid", "gid", "size")
STX_TIME_FIELDS = ("atime", "mtime", "ctime", "btime")


def _stx(v: Any) -> dict:
    if not isinstance(v, dict):
        raise TypeError("a map of statx fields")
    out: dict[str, int | float] = {}
    for key, value in v.items():
        if key in STX_INT_FIELDS:
            out[key] = _int(value)
        elif key in STX_TIME_FIELDS:
            out[key] = _number(value)
        else:
            raise TypeError(f"a map of statx fields ({key!r} is not one)")
    return out


def _strmap(v: Any) -> dict:
    if not isinstance(v, dict) or len(v) > 1024 or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise TypeError("a map of strings to strings")
    return v


PATH, OPATH, INT, UINT, BYTES, OBYTES = _path, _optional(_path), _int, _uint, _bytes, _optional(_bytes)
STR, OSTR, BOOL, TIMES, STX, STRMAP = _str, _optional(_str), _bool, _times, _stx, _strmap
BYTESS, UINTS = _list_of(_bytes), _list_of(_uint)

#: op -> kinds of its arguments.  Ops not listed take no arguments.
ARGS: dict[Op, tuple[Callable[[Any], Any], ...]] = {
    Op.CREATE: (OBYTES,),                     # auth_id
    Op.CONF_READ_FILE: (STR, BYTES),          # the client's path (for messages), content
    Op.CONF_SET: (BYTES, BYTES),              # option, value
    Op.CONF_GET: (BYTES,),
    Op.CONF_PARSE_ARGV: (BYTESS,),
    Op.SET_MOUNT_TIMEOUT: (INT,),
    Op.SET_SESSION_TIMEOUT: (INT,),
    Op.SET_UUID: (BYTES,),
    Op.MOUNT: (OPATH, OBYTES),                # mount_root, filesystem_name
    Op.CHDIR: (PATH,),
    Op.UMASK: (UINT,),
    Op.STAT: (PATH, BOOL),                    # path, follow_symlink
    Op.STATX: (PATH, INT, INT),               # path, mask, flag
    Op.SETATTRX: (PATH, STX, INT, INT),       # path, stx, mask, flags
    Op.CHMOD: (PATH, INT),
    Op.LCHMOD: (PATH, INT),
    Op.CHOWN: (PATH, INT, INT, BOOL),         # path, uid, gid, follow_symlink
    Op.UTIME: (PATH, TIMES),                  # path, null (now) or [atime, mtime]
    Op.UTIMES: (PATH, TIMES, BOOL),           # path, times, follow_symlink
    Op.STATFS: (PATH,),
    Op.MKDIR: (PATH, INT),
    Op.MKDIRS: (PATH, INT),
    Op.RMDIR: (PATH,),
    Op.UNLINK: (PATH,),
    Op.RENAME: (PATH, PATH),
    Op.LINK: (PATH, PATH),
    Op.SYMLINK: (BYTES, PATH),                # target (stored as is), new link
    Op.READLINK: (PATH, UINT),                # path, size
    Op.MKNOD: (PATH, INT, INT),               # path, mode, rdev
    Op.OPEN: (PATH, INT, INT),                # path, flags (O_*), mode
    Op.CLOSE: (INT,),
    Op.READ: (INT, INT, UINT),                # fd, offset (<0: file position), length
    Op.WRITE: (INT, INT),                     # fd, offset; data section: the bytes
    Op.READ_WINDOW: (INT, INT, UINT, UINT),   # fd, offset (<0: file position), length, at
    Op.WRITE_WINDOW: (INT, INT, UINT, UINT),  # fd, offset (<0: file position), length, at
    Op.READ_BUFFER: (INT, INT, UINT, UINT, UINT),  # fd, offset (<0: position), length, id, at
    Op.WRITE_BUFFER: (INT, INT, UINT, UINT, UINT),  # fd, offset (<0: position), length, id, at
    Op.OPEN_READ: (PATH, INT, INT, UINT),     # path, flags (read-only), mode, readahead
    Op.BUFFER: (UINT,),                       # size
    Op.FREE_BUFFER: (UINT,),                  # id
    Op.PREADV: (INT, UINTS, INT),             # fd, buffer lengths, offset
    Op.PWRITEV: (INT, UINTS, INT),            # fd, buffer lengths, offset; data: buffers
    Op.LSEEK: (INT, INT, INT),                # fd, offset, whence
    Op.FSYNC: (INT, INT),                     # fd, syncdataonly
    Op.FSTAT: (INT,),
    Op.FSETATTRX: (INT, STX, INT),            # fd, stx, mask
    Op.FCHMOD: (INT, INT),
    Op.FCHOWN: (INT, INT, INT),
    Op.FUTIME: (INT, TIMES),
    Op.FUTIMES: (INT, TIMES),
    Op.FUTIMENS: (INT, TIMES),
    Op.FALLOCATE: (INT, INT, INT, INT),       # fd, offset, length, mode
    Op.FLOCK: (INT, INT, UINT),               # fd, operation, owner
    Op.LAZYIO: (INT, INT),                    # fd, enable
    Op.LAZYIO_PROPAGATE: (INT, INT, INT),     # fd, offset, count
    Op.LAZYIO_SYNCHRONIZE: (INT, INT, INT),
    Op.OPENDIR: (PATH,),
    Op.READDIR: (UINT, UINT),                 # handle, max entries
    Op.CLOSEDIR: (UINT,),
    Op.REWINDDIR: (UINT,),
    Op.TELLDIR: (UINT,),
    Op.SEEKDIR: (UINT, INT),                  # handle, position
    Op.LISTDIR: (PATH, UINT),                 # path, max entries
    Op.GETXATTR: (PATH, BYTES, UINT, BOOL),   # path, name, size, follow_symlink
    Op.FGETXATTR: (INT, BYTES, UINT),
    Op.SETXATTR: (PATH, BYTES, BYTES, INT, BOOL),  # path, name, value, flags, follow
    Op.FSETXATTR: (INT, BYTES, BYTES, INT),
    Op.LISTXATTR: (PATH, UINT, BOOL),         # path, size, follow_symlink
    Op.FLISTXATTR: (INT, UINT),
    Op.REMOVEXATTR: (PATH, BYTES, BOOL),
    Op.FREMOVEXATTR: (INT, BYTES),
    Op.GET_LAYOUT: (INT,),
    Op.GET_FILE_REPLICATION: (INT,),
    Op.GET_PATH_REPLICATION: (PATH,),
    Op.GET_POOL_ID: (BYTES,),
    Op.GET_POOL_REPLICATION: (INT,),
    Op.MKSNAP: (PATH, BYTES, INT, STRMAP),    # path, name, mode, metadata
    Op.RMSNAP: (PATH, BYTES),
    Op.SNAP_INFO: (PATH,),
    Op.MDS_COMMAND: (BYTES, BYTES, BYTES),    # mds spec, command, input
    Op.DEBUG_GET_FD_CAPS: (INT,),
    Op.DEBUG_GET_FILE_CAPS: (PATH,),
}


def check_args(op: int, args: list) -> tuple[Op, list]:
    """Validate a request's op and arguments.  Raises RequestError."""
    try:
        op = Op(op)
    except ValueError:
        raise RequestError(f"unknown op {op}", _errno.EOPNOTSUPP) from None
    kinds = ARGS.get(op, ())
    if len(args) != len(kinds):
        raise RequestError(f"{op.name} takes {len(kinds)} arguments, got {len(args)}")
    checked = []
    for i, (kind, arg) in enumerate(zip(kinds, args, strict=True)):
        try:
            checked.append(kind(arg))
        except TypeError as exc:
            raise RequestError(f"{op.name} argument {i} must be {exc}, "
                               f"not {type(arg).__name__}") from None
    return op, checked
