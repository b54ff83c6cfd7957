"""The daemon's one way into CephFS: the only module that imports ``cephfs``.

Everything else in the daemon gets ``cephfs.LibCephFS`` instances and error
translation from a :class:`CephBackend`.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any

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


# The binding returns times as naive datetimes from fromtimestamp(seconds) in
# the process's time zone.  Pinned to UTC, the daemon inverts them exactly
# (no DST folds) and sends plain seconds; each client rebuilds datetimes in
# its own zone, as the binding would have in that client's process.
os.environ["TZ"] = "UTC"
time.tzset()


class CephBackend:
    """Creates libcephfs instances and translates their errors."""

    def __init__(self) -> None:
        probe = cephfs.LibCephFS()
        #: (major, minor, extra) of the libcephfs this daemon runs.
        self.version: tuple[int, int, int] = probe.version()
        #: This daemon's own values of options a client may not redirect.
        self.defaults = {name: probe.conf_get(name)
                         for name in ("plugin_dir", "erasure_code_dir", "crash_dir")}
        self.destroy(probe)

    def __repr__(self) -> str:
        return f"<CephBackend libcephfs {'.'.join(map(str, self.version))}>"

    def new_instance(self, auth_id: bytes | None) -> Any:
        """An unmounted libcephfs instance in state 'configuring', reading no config file."""
        return cephfs.LibCephFS(auth_id=auth_id)

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
