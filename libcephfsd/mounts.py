"""Shared real mounts, and the configuration that decides who may share one.

A session configures itself (auth id, config file content, conf_set, ...) on
a private, unmounted libcephfs instance: that validates each step as the
binding would and answers conf_get.  At mount time its *recipe* (every step
in order, config files by content), the mount root, the filesystem name and
the peer's kernel credentials form the sharing key.  Sessions with equal keys
share one real mount; the last one to leave unmounts it.

Security: a client cannot widen what it may do through the daemon.

* Options that decide identity, permission checks, or where the daemon
  writes or loads code (``GUARDED``) are set by the daemon at mount time;
  a client's conf_set of one fails with EPERM, and values from a config file
  are overridden.
* Keyrings and key files are read with the client's own credentials
  (:func:`libcephfsd.peer.read_file_as`) and handed to libcephfs as private
  copies, so the daemon never reads for a client what it could not read.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .backend import DAEMON_OWNED, CephBackend, find_mount_pointer, watch_invalidations
from .peer import Peer, read_file_as

log = logging.getLogger(__name__)


def normalize_option(name: str) -> str:
    """Ceph accepts 'client mount uid', 'client-mount-uid' and 'client_mount_uid' alike."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


#: Options the daemon decides, per peer (below) or as its own (DAEMON_OWNED).
GUARDED = frozenset({
    "client_mount_uid", "client_mount_gid", "client_permissions", "fuse_default_permissions",
    "admin_socket", "admin_socket_mode", "log_file", "log_to_file", "log_to_stderr",
    "run_dir", "pid_file", "heartbeat_file",
    "chdir", "setuser", "setgroup", "setuser_match_path", "daemonize",
    "client_die_on_failed_remount", "client_die_on_failed_dentry_invalidate",
}) | frozenset(DAEMON_OWNED)

#: argv elements that would make libcephfs read a file named by the client.
_ARGV_FILE_FLAGS = ("-c", "--conf", "--conf_file", "--conf-file")


class ConfigError(Exception):
    """A configuration step was refused; ``errno`` says why."""

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


class MountConfig:
    """One session's configuration before mount.

    Every step is applied at once to a private, unmounted libcephfs instance
    (so errors surface where the binding raises them and conf_get answers)
    and recorded in ``steps``: the recipe that keys mount sharing and can be
    replayed after an unmount.  Only its session's thread touches it.
    """

    def __init__(self, backend: CephBackend, auth_id: bytes | None, private_dir: str,
                 peer: Peer):
        self._backend = backend
        self._private_dir = private_dir
        self.peer = peer
        self.auth_id = auth_id
        self.fs: Any = backend.new_instance(auth_id)
        self.steps: list[tuple] = []
        self.initialized = False

    def __repr__(self) -> str:
        return (f"<MountConfig auth_id={self.auth_id!r} steps={len(self.steps)}"
                f"{' initialized' if self.initialized else ''}>")

    @classmethod
    def replay(cls, backend: CephBackend, auth_id: bytes | None, steps: list[tuple],
               private_dir: str, peer: Peer) -> MountConfig:
        config = cls(backend, auth_id, private_dir, peer)
        for step in steps:
            getattr(config, step[0])(*step[1:])
        return config

    def read_file(self, content: bytes) -> None:
        # libcephfs only reads config from a path: give it a private copy of
        # the content the client read with its own permissions.
        fd, path = tempfile.mkstemp(prefix="conf-", dir=self._private_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            self.fs.conf_read_file(path)
        finally:
            os.unlink(path)
        self.steps.append(("read_file", content))

    def set(self, option: bytes, value: bytes) -> None:
        name = normalize_option(option.decode(errors="replace"))
        if name in GUARDED:
            forced = forced_options(self.peer, self._backend.defaults,
                                    self._private_dir).get(name)
            if forced is None or _canonical(value.decode(errors="replace")) != _canonical(forced):
                raise ConfigError(errno.EPERM, f"option {name!r} is set by libcephfsd "
                                  f"(to {forced!r} for this client), not by clients")
        self.fs.conf_set(option, value)
        self.steps.append(("set", option, value))

    def get(self, option: bytes) -> str | None:
        return self.fs.conf_get(option)

    def parse_argv(self, argv: list[bytes]) -> None:
        for arg in argv:
            text = arg.decode(errors="replace")
            if text.split("=", 1)[0] in _ARGV_FILE_FLAGS:
                raise ConfigError(errno.EPERM, f"libcephfsd does not read config files named in "
                                  f"argv ({text!r}); use conf_read_file")
            if text.startswith("--") and normalize_option(text[2:].split("=", 1)[0]) in GUARDED:
                raise ConfigError(errno.EPERM, f"option {text!r} is set by libcephfsd, "
                                  "not by clients")
        self.fs.conf_parse_argv(argv)
        self.steps.append(("parse_argv", argv))

    def set_mount_timeout(self, timeout: int) -> None:
        self.fs.set_mount_timeout(timeout)
        self.steps.append(("set_mount_timeout", timeout))

    def set_session_timeout(self, timeout: int) -> None:
        self.fs.set_session_timeout(timeout)
        self.steps.append(("set_session_timeout", timeout))

    def set_uuid(self, uuid: bytes) -> None:
        self.fs.set_uuid(uuid)
        self.steps.append(("set_uuid", uuid))

    def key(self, root: bytes | None, fs_name: bytes | None) -> str:
        """What two sessions must have in common to share a mount."""
        h = hashlib.sha256()
        peer = self.peer
        for part in (self.auth_id, *self.steps, root or b"/", fs_name or b"",
                     peer.uid, peer.gid, peer.groups):
            h.update(repr(part).encode())
        return h.hexdigest()

    def initialize(self) -> None:
        """Impose the daemon's options, resolve keys as the peer, size the object
        cache for sharing, connect (ceph_init)."""
        private_files: list[str] = []
        try:
            sanitize(self.fs, self.peer, self._backend.defaults, self._private_dir,
                     private_files)
            self._backend.size_object_cache(self.fs)
            self.fs.init()
        finally:
            # libcephfs has read the private key copies during init().
            for path in private_files:
                os.unlink(path)
        self.initialized = True

    def discard(self) -> None:
        fs, self.fs = self.fs, None
        if fs is None:
            return
        try:
            self._backend.destroy(fs)
        except Exception:
            log.exception("discarding %r failed", self)


def _canonical(value: str) -> str:
    value = value.strip().lower()
    return {"1": "true", "yes": "true", "on": "true",
            "0": "false", "no": "false", "off": "false"}.get(value, value)


def forced_options(peer: Peer, defaults: dict[str, str], private_dir: str) -> dict[str, str]:
    """The values libcephfsd imposes on every mount it makes for *peer*."""
    forced = {
        "client_mount_uid": str(peer.uid), "client_mount_gid": str(peer.gid),
        "client_permissions": "true", "fuse_default_permissions": "false",
        "admin_socket": "", "admin_socket_mode": "", "log_file": "", "log_to_file": "false",
        "log_to_stderr": "false", "run_dir": private_dir, "pid_file": "", "heartbeat_file": "",
        "chdir": "", "setuser": "", "setgroup": "", "setuser_match_path": "",
        "daemonize": "false", "client_die_on_failed_remount": "false",
        "client_die_on_failed_dentry_invalidate": "false",
    }
    forced.update(defaults)
    assert forced.keys() <= GUARDED, "forced_options() may only set GUARDED options"
    return forced


def sanitize(fs: Any, peer: Peer, defaults: dict[str, str], private_dir: str,
             private_files: list[str]) -> None:
    """Prepare an unmounted instance so that mounting it grants *peer* nothing extra."""
    for option, value in forced_options(peer, defaults, private_dir).items():
        fs.conf_set(option, value)
    if "cephx" not in (fs.conf_get("auth_client_required") or ""):
        # No authentication: never read a keyring on the client's behalf.
        fs.conf_set("keyring", "")
        fs.conf_set("keyfile", "")
        return
    # libcephfs uses the first keyring in the list it can open, then key and
    # keyfile: hand it private copies of those files, read as the peer.
    keyring = next((c.strip() for c in (fs.conf_get("keyring") or "").split(",")
                    if c.strip() and os.path.exists(c.strip())), None)
    for option, path in (("keyring", keyring), ("keyfile", fs.conf_get("keyfile") or None)):
        if not path:
            fs.conf_set(option, "")
            continue
        try:
            content = read_file_as(peer, path)
        except OSError as exc:
            raise ConfigError(exc.errno or errno.EACCES,
                              f"{option} {path} cannot be read by uid {peer.uid}: "
                              f"{exc.strerror}") from exc
        fd, private = tempfile.mkstemp(prefix=f"{option}-", dir=private_dir)
        private_files.append(private)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        fs.conf_set(option, private)


@dataclass(eq=False)
class SharedMount:
    """One real libcephfs mount and the sessions using it."""

    id: int
    key: str
    auth_id: bytes | None
    fs_name: str | None
    root: str
    uid: int
    gid: int
    #: The configuration steps of the sessions sharing it (all equal).
    recipe: list = field(default_factory=list)
    fs: Any = None
    refs: int = 0
    #: The filesystem's cache tracker when client caches are enabled.
    tracker: Any = None
    #: The answers its sessions share (SHARED_CACHE), made on first request.
    shared: Any = None
    #: Inode of its root, found on first need (it never changes while mounted).
    root_ino: int | None = None
    #: libcephfs's invalidation callbacks on this mount (kept alive with it).
    watch: Any = None
    #: Its ``struct ceph_mount_info *`` (callbacks, raw I/O); 0 if it cannot
    #: be found safely.
    pointer: int = 0
    mounted_at: float = field(default_factory=time.time)
    ready: threading.Event = field(default_factory=threading.Event)

    def __repr__(self) -> str:
        return (f"<SharedMount #{self.id} {self.entity}@{self.fs_name or 'default'}:"
                f"{self.root} uid={self.uid} gid={self.gid} refs={self.refs}>")

    @property
    def entity(self) -> str:
        return "client." + (self.auth_id.decode(errors="replace") if self.auth_id else "admin")

    def describe(self) -> dict:
        return {"id": self.id, "entity": self.entity, "fs_name": self.fs_name,
                "root": self.root, "uid": self.uid, "gid": self.gid, "refs": self.refs,
                "mounted_at": self.mounted_at,
                "shared_cache": self.shared.describe() if self.shared is not None else None}


class MountRegistry:
    """All real mounts of the daemon, keyed by :meth:`MountConfig.key`.  Thread-safe."""

    def __init__(self, coherence: Any = None) -> None:
        self._coherence = coherence
        self._lock = threading.Lock()
        self._mounts: dict[str, SharedMount] = {}
        self._next_id = 1

    def __repr__(self) -> str:
        return f"<MountRegistry mounts={len(self._mounts)}>"

    def acquire(self, config: MountConfig, root: bytes | None,
                fs_name: bytes | None) -> SharedMount:
        """A mounted SharedMount for this configuration, with one more reference.

        Takes over *config*'s instance (mounting it) or discards it (sharing an
        existing mount).  Raises the binding's error or ConfigError.
        """
        key = config.key(root, fs_name)
        peer = config.peer
        while True:
            with self._lock:
                mount = self._mounts.get(key)
                if mount is None:
                    mount = SharedMount(
                        self._next_id, key, config.auth_id,
                        fs_name.decode(errors="replace") if fs_name else None,
                        root.decode(errors="replace") if root else "/", peer.uid, peer.gid,
                        recipe=list(config.steps), refs=1)
                    self._next_id += 1
                    self._mounts[key] = mount
                    break
                if mount.ready.is_set():
                    mount.refs += 1
                    config.discard()
                    return mount
            # Another session is mounting this key right now: wait for it,
            # then share its mount, or try ourselves if it failed.
            mount.ready.wait()
        try:
            if not config.initialized:
                config.initialize()
            config.fs.mount(mount_root=root, filesystem_name=fs_name)
        except BaseException:
            with self._lock:
                del self._mounts[key]
            mount.ready.set()
            config.discard()
            raise
        mount.fs, config.fs = config.fs, None
        mount.pointer = find_mount_pointer(mount.fs)
        if self._coherence is not None:
            tracker = self._coherence.tracker_for(filesystem_identity(mount.fs))
            mount.tracker = tracker
            if mount.pointer:
                mount.watch = watch_invalidations(
                    mount.pointer, lambda ino: tracker.invalidate([ino], callback=True),
                    lambda parent, ino, name: tracker.invalidate([(parent, name), ino],
                                                                 callback=True))
        mount.ready.set()
        log.info("mounted %r (object cache %s MiB)", mount,
                 int(mount.fs.conf_get("client_oc_size") or 0) >> 20)
        return mount

    def release(self, mount: SharedMount) -> None:
        """Drop one reference; the last one unmounts for real."""
        with self._lock:
            mount.refs -= 1
            if mount.refs > 0:
                return
            del self._mounts[mount.key]
        self._unmount(mount)

    def _unmount(self, mount: SharedMount) -> None:
        if mount.shared is not None:
            mount.shared.close()
            mount.shared = None
        try:
            mount.fs.unmount()
        except Exception:
            log.exception("unmount of %r failed", mount)
        finally:
            try:
                mount.fs.shutdown()
            except Exception:
                log.exception("shutdown of %r failed", mount)
        log.info("unmounted %r", mount)

    def unmount_all(self) -> None:
        with self._lock:
            mounts = list(self._mounts.values())
            self._mounts.clear()
        for mount in mounts:
            if mount.fs is not None:
                self._unmount(mount)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [m.describe() for m in self._mounts.values() if m.ready.is_set()]


def filesystem_identity(fs: Any) -> tuple:
    """What names one filesystem across mounts: cluster fsid (or monitors) and fscid."""
    return (fs.conf_get("fsid") or fs.conf_get("mon_host") or "?", fs.get_fscid())
