"""Fixtures: a real Ceph cluster, real libcephfsd processes, real clients.

A missing Ceph is a failure here, never a skip: ``make test`` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from helpers import REPO, Daemon, public_dir

DEV_CLUSTER = REPO / "tools" / "ceph-dev-cluster"
FS_NAME = "cephfs"


def start_cluster(*args: str) -> str:
    if shutil.which("ceph-mon") is None:
        pytest.fail("Ceph is not installed (no ceph-mon on PATH): run `make test`, "
                    "which installs it", pytrace=False)
    proc = subprocess.run([sys.executable, str(DEV_CLUSTER), "start", *args],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"could not start the dev cluster:\n{proc.stderr}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def cluster_running(*args: str) -> bool:
    return subprocess.run([sys.executable, str(DEV_CLUSTER), "status", *args],
                          capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="session")
def ceph_conf() -> str:
    """Path of a running dev cluster's ceph.conf (auth none).

    Reuses a running dev cluster (`make cluster`); one this fixture had to
    start is stopped at the end of the run.
    """
    was_running = cluster_running()
    yield start_cluster()
    if not was_running:
        subprocess.run([sys.executable, str(DEV_CLUSTER), "stop"], capture_output=True,
                       timeout=300)


@pytest.fixture(scope="session")
def direct_fs(ceph_conf: str):
    """A direct libcephfs mount in the test process, as root: the reference."""
    from libcephfsd.backend import cephfs

    fs = cephfs.LibCephFS(conffile=ceph_conf)
    fs.mount(filesystem_name=FS_NAME)
    yield fs
    fs.shutdown()


@pytest.fixture(scope="session", params=["plain", "cached"])
def daemon(request, ceph_conf: str):
    """One libcephfsd shared by the tests that do not need their own.

    Every test using it runs twice: against a daemon without client caches,
    and against one with them (clients then answer from their caches
    whenever they may, which must never change a result).
    """
    extra = ["--enable-client-cache"] if request.param == "cached" else []
    d = Daemon(os.path.join(public_dir(f"libcephfsd-{request.param}-"), "d.sock"), *extra)
    yield d
    code = d.stop()
    assert code == 0, f"libcephfsd exited with {code}:\n{d.log()}"


@pytest.fixture
def proxy_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", daemon.socket_path)
    return daemon


@pytest.fixture
def connect(proxy_env: Daemon, ceph_conf: str):
    """Factory of mounted proxy clients; all are shut down after the test."""
    import libcephfs_proxy

    clients = []

    def make(**kwargs):
        fs = libcephfs_proxy.LibCephFS(conffile=kwargs.pop("conffile", ceph_conf))
        fs.mount(filesystem_name=kwargs.pop("filesystem_name", FS_NAME), **kwargs)
        clients.append(fs)
        return fs

    yield make
    for fs in clients:
        fs.shutdown()


@pytest.fixture
def fs(connect):
    """One mounted proxy client."""
    return connect()


@pytest.fixture
def workdir(direct_fs) -> str:
    """A fresh, world-writable directory on CephFS for one test; removed afterwards."""
    path = f"/t-{uuid.uuid4().hex[:12]}"
    direct_fs.mkdir(path, 0o777)
    direct_fs.chmod(path, 0o777)
    yield path
    remove_tree(direct_fs, path)


def remove_tree(fs, path: str) -> None:
    import stat as st

    d = fs.opendir(path)
    try:
        while (e := fs.readdir(d)) is not None:
            if e.d_name in (b".", b".."):
                continue
            child = f"{path}/{e.d_name.decode()}"
            if st.S_ISDIR(fs.lstat(child).st_mode):
                remove_tree(fs, child)
            else:
                fs.unlink(child)
    finally:
        fs.closedir(d)
    fs.rmdir(path)
