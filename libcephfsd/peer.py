"""Who is on the other end of a unix socket, and what that user may read.

Credentials come from the kernel (``SO_PEERCRED``), never from the client.
Files the daemon reads on a client's behalf (keyrings) are read by a short
child process running with the client's uid, gid and groups, so the daemon
never reads for a client what the client could not read itself.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
from dataclasses import dataclass

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    #: Supplementary groups, from /proc at connect time (empty if unknown).
    groups: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid} gid {self.gid}"

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def peer_of(sock: socket.socket) -> Peer:
    """The credentials the kernel recorded when *sock*'s peer connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid, uid, gid, _groups_of(pid, uid))


def _groups_of(pid: int, uid: int) -> tuple[int, ...]:
    # The process may already be gone, or its pid reused by another user's
    # process: only trust /proc when it still shows the same real uid.
    # Fewer groups can only mean fewer permissions, so failing empty is safe.
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        if int(fields["Uid"].split()[0]) != uid:
            return ()
        return tuple(sorted(int(g) for g in fields["Groups"].split()))
    except (OSError, KeyError, ValueError):
        return ()


def read_file_as(peer: Peer, path: str, limit: int = 1 << 20) -> bytes:
    """Read *path* with *peer*'s permissions.

    Raises OSError with EACCES/ENOENT/... exactly as the peer would have got,
    EFBIG when the file is larger than *limit*.
    """
    if peer.is_root or (peer.uid, peer.gid) == (os.geteuid(), os.getegid()):
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    else:
        try:
            proc = subprocess.run(
                ["cat", "--", path], capture_output=True, timeout=10,
                user=peer.uid, group=peer.gid, extra_groups=list(peer.groups),
                env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
        except PermissionError as exc:  # this daemon may not switch to the peer's uid
            raise OSError(errno.EACCES, f"cannot read {path} as uid {peer.uid}: {exc}",
                          path) from exc
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip()
            code = errno.EACCES if "Permission denied" in message else (
                errno.ENOENT if "No such file" in message else errno.EIO)
            raise OSError(code, f"{os.strerror(code)} (reading {path} as uid {peer.uid})", path)
        data = proc.stdout
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes", path)
    return data
