"""Result types of the cephfs binding, built from what the daemon sends."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Any, NamedTuple


class DirEntry(namedtuple("DirEntry", ["d_ino", "d_off", "d_reclen", "d_type", "d_name"])):
    DT_DIR = 0x4
    DT_REG = 0x8
    DT_LNK = 0xA

    def is_dir(self) -> bool:
        return self.d_type == self.DT_DIR

    def is_symbol_file(self) -> bool:
        return self.d_type == self.DT_LNK

    def is_file(self) -> bool:
        return self.d_type == self.DT_REG


StatResult = namedtuple("StatResult",
                        ["st_dev", "st_ino", "st_mode", "st_nlink", "st_uid",
                         "st_gid", "st_rdev", "st_size", "st_blksize",
                         "st_blocks", "st_atime", "st_mtime", "st_ctime"])

_fromtimestamp = datetime.fromtimestamp
_STATX_TIMES = ("atime", "mtime", "ctime", "btime")


def stat_result(wire: list) -> StatResult:
    """StatResult from the daemon's 13-element list (times in whole seconds).

    Times become naive local datetimes, as the binding makes them in the
    caller's process.
    """
    wire[10] = _fromtimestamp(wire[10])
    wire[11] = _fromtimestamp(wire[11])
    wire[12] = _fromtimestamp(wire[12])
    return StatResult._make(wire)


def statx_result(wire: dict[str, Any]) -> dict[str, Any]:
    for key in _STATX_TIMES:
        if key in wire:
            wire[key] = _fromtimestamp(wire[key])
    return wire


def cstr(val: Any, name: str, encoding: str = "utf-8", opt: bool = False) -> bytes | None:
    """The binding's argument conversion: str is encoded, bytes pass, else TypeError."""
    if opt and val is None:
        return None
    if isinstance(val, bytes):
        return val
    try:
        v = val.encode(encoding)
    except Exception:
        raise TypeError("%s must be encodeable as a bytearray" % name) from None
    assert isinstance(v, bytes)
    return v


def cstr_list(list_str: Any, name: str, encoding: str = "utf-8") -> list[bytes]:
    return [cstr(s, name) for s in list_str]  # type: ignore[misc]


def decode_cstr(val: bytes | None, encoding: str = "utf-8") -> str | None:
    if val is None:
        return None
    return val.decode(encoding)


class Listing(NamedTuple):
    """LISTDIR's answer, entries immutable (a complete listing may be cached
    and shared by DirResults)."""

    handle: int
    pos: int
    entries: tuple
    eof: bool


class FileData(NamedTuple):
    """A small file's whole content, as OPEN_READ answered it."""

    data: bytes


def cache_weight(value: Any) -> int:
    """What a cached answer counts against the cache's entry bound: 1, and
    for a directory listing 1 more per 16 entries, for a file's content 1
    more per 4 KiB."""
    kind = type(value)
    if kind is Listing:
        return 1 + len(value.entries) // 16
    if kind is FileData:
        return 1 + len(value.data) // 4096
    return 1
