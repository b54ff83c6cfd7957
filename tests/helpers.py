"""Shared test helpers: a real daemon process, a raw protocol client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from libcephfsd import protocol
from libcephfsd.protocol import Event, Op, Reply, Request
from libcephfsd.transport import SocketTransport

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


class Clock:
    """A clock tests move by hand (``clock.now = ...``): no sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    """Poll *predicate* until it returns a truthy value; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def public_dir(prefix: str) -> str:
    """A fresh directory any user may traverse (for non-root clients)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def evict(ceph_conf: str, instance_id: int) -> None:
    """Evict a dead CephFS client now, instead of making others wait for the
    MDS to time its session out (a killed daemon's caps block other clients)."""
    subprocess.run(["ceph", "-c", ceph_conf, "tell", "mds.*", "client", "evict",
                    f"id={instance_id}"], check=True, capture_output=True, timeout=60)


class Daemon:
    """A libcephfsd process on its own socket."""

    def __init__(self, socket_path: str, *extra: str, log_path: str | None = None):
        self.socket_path = socket_path
        self.log_path = log_path or socket_path + ".log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "libcephfsd", "--socket", socket_path,
             "--socket-mode", "0666", "--log-level", "debug", *extra],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_for(self._answers, timeout=30, what=f"libcephfsd on {socket_path}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"libcephfsd did not start; log:\n{self.log()}") from None

    def __repr__(self) -> str:
        return f"<Daemon pid={self.proc.pid} {self.socket_path}>"

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"libcephfsd exited with {self.proc.returncode}:\n{self.log()}")
        try:
            RawClient(self.socket_path).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def status(self) -> dict:
        with RawClient(self.socket_path) as raw:
            return raw.call(Op.STATUS)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class RawClient:
    """Speaks the protocol by hand, for tests of the wire itself."""

    def __init__(self, path: str, hello: bool = True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.transport = SocketTransport(self.sock, protocol.DATA_CEILING, protocol.DATA_CEILING)
        self._id = 0
        if hello:
            self.hello = self.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, 0])

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, op: int, args: list | None = None, data: bytes = b"") -> Reply | Event:
        self._id += 1
        self.transport.send(Request(self._id, op, args or [], data))
        return self.transport.receive()

    def request_with_fds(self, op: int, args: list | None = None) -> tuple[Reply | Event, list]:
        """request(), and the descriptors that came with the answer."""
        self._id += 1
        self.transport.send(Request(self._id, op, args or [], b""))
        return self.transport.receive_with_fds()

    def call(self, op: int, args: list | None = None, data: bytes = b"") -> Any:
        reply = self.request(op, args, data)
        assert isinstance(reply, Reply) and reply.errno == 0, reply
        return reply.result

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Reply | Event:
        return self.transport.receive()

    def close(self) -> None:
        self.sock.close()


def raw_mounted(path: str, ceph_conf: str, features: int) -> RawClient:
    """A RawClient that said HELLO with *features*, created, configured and mounted."""
    raw = RawClient(path, hello=False)
    raw.hello = raw.call(Op.HELLO, [protocol.MAGIC, protocol.PROTOCOL_VERSION, features])
    raw.call(Op.CREATE, [None])
    with open(ceph_conf, "rb") as f:
        raw.call(Op.CONF_READ_FILE, [ceph_conf, f.read()])
    raw.call(Op.MOUNT, [None, b"cephfs"])
    return raw
