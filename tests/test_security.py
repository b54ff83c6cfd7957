"""A client can do through the daemon exactly what its own user could do.

The client processes here run as an unprivileged user (uid/gid 65534), as a
forked Samba worker would after switching users; the daemon runs as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import start_cluster
from helpers import NOBODY, REPO, Daemon, public_dir

# Runs as the unprivileged user: performs the steps given as JSON and prints,
# for each, "ok" and its result or the exception's class and errno.
AS_USER = r"""
import json, sys, libcephfs_proxy as cephfs
steps = json.loads(sys.argv[1])
out, fs = [], None
for step in steps:
    name, args = step[0], step[1:]
    try:
        if name == "new":
            fs = cephfs.LibCephFS(conffile=args[0], auth_id=args[1])
            result = None
        else:
            result = getattr(fs, name)(*args)
            if isinstance(result, bytes):
                result = result.decode()
            elif hasattr(result, "st_uid"):
                result = [result.st_uid, result.st_gid]
        out.append(["ok", result])
    except Exception as exc:
        out.append([type(exc).__name__, getattr(exc, "errno", None), str(exc)])
print(json.dumps(out))
"""


def as_user(socket_path: str, steps: list, uid: int = NOBODY) -> list:
    proc = subprocess.run([sys.executable, "-c", AS_USER, json.dumps(steps)], user=uid,
                          group=uid, extra_groups=[], capture_output=True, text=True,
                          timeout=120, cwd="/", env={"LIBCEPHFSD_SOCKET": socket_path,
                                                     "PATH": "/usr/bin:/bin",
                                                     "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def mount_steps(conf: str, auth_id: str | None = None, **conf_set) -> list:
    steps = [["new", conf, auth_id]]
    steps += [["conf_set", k, v] for k, v in conf_set.items()]
    return steps + [["mount", None, "cephfs"]]


@pytest.fixture
def tree(direct_fs, workdir):
    """root-owned files and directories with telling modes."""
    direct_fs.chmod(workdir, 0o755)
    fd = direct_fs.open(f"{workdir}/secret", "w", 0o600)
    direct_fs.write(fd, b"root only", 0)
    direct_fs.close(fd)
    fd = direct_fs.open(f"{workdir}/public", "w", 0o644)
    direct_fs.write(fd, b"anyone", 0)
    direct_fs.close(fd)
    direct_fs.mkdir(f"{workdir}/open", 0o777)
    direct_fs.chmod(f"{workdir}/open", 0o777)
    direct_fs.mkdir(f"{workdir}/closed", 0o700)
    return workdir


def test_unprivileged_client_gets_its_own_permissions(daemon, ceph_conf, tree):
    out = as_user(daemon.socket_path, mount_steps(ceph_conf) + [
        ["open", f"{tree}/secret", "r"],
        ["open", f"{tree}/public", "r"],
        ["open", f"{tree}/newfile", "w", 0o644],
        ["open", f"{tree}/open/mine", "w", 0o644],
        ["stat", f"{tree}/open/mine"],
        ["chmod", f"{tree}/public", 0o666],
        ["chown", f"{tree}/open/mine", 0, 0],
        ["opendir", f"{tree}/closed"],
        ["stat", f"{tree}/closed/x"],
    ])
    mounted, secret, public, new, mine, owner, chmod, chown, opendir, stat_closed = \
        out[-10:]
    assert mounted == ["ok", None]
    assert secret[:2] == ["PermissionDenied", 13]
    assert public[0] == "ok"
    assert new[:2] == ["PermissionDenied", 13]
    assert mine[0] == "ok"
    assert owner == ["ok", [NOBODY, NOBODY]]
    assert chmod[:2] == ["PermissionError", 1]
    assert chown[:2] == ["PermissionError", 1]
    assert opendir[:2] == ["PermissionDenied", 13]
    assert stat_closed[:2] == ["PermissionDenied", 13]


def test_root_and_unprivileged_clients_never_share_a_mount(daemon, ceph_conf, tree):
    out = as_user(daemon.socket_path, mount_steps(ceph_conf) + [["get_instance_id"]])
    root_view = as_user(daemon.socket_path, mount_steps(ceph_conf) + [["get_instance_id"]],
                        uid=0)
    assert out[-1][0] == root_view[-1][0] == "ok"
    assert out[-1][1] != root_view[-1][1]


def test_conf_set_cannot_change_identity_or_permission_checks(daemon, ceph_conf, tree):
    guarded = [("client_mount_uid", "0"), ("client_mount_gid", "0"),
               ("client_permissions", "false"), ("admin_socket", "/tmp/x.asok"),
               ("log_file", "/etc/evil"), ("plugin_dir", "/tmp"),
               ("client mount uid", "0"), ("client-permissions", "0")]
    steps = [["new", ceph_conf, None]] + [["conf_set", k, v] for k, v in guarded]
    steps += [["conf_parse_argv", ["--client_mount_uid=0"]],
              ["conf_parse_argv", ["-c", "/etc/shadow"]],
              ["conf_set", "client_permissions", "true"],     # the daemon's own value
              ["mount", None, "cephfs"], ["open", f"{tree}/secret", "r"]]
    out = as_user(daemon.socket_path, steps)
    for result in out[1:1 + len(guarded) + 2]:
        assert result[:2] == ["PermissionError", 1], result
    assert out[-3] == ["ok", None]
    assert out[-2] == ["ok", None]
    assert out[-1][:2] == ["PermissionDenied", 13]


def test_config_file_cannot_change_identity_either(daemon, ceph_conf, tree):
    evil = Path(public_dir("evil-conf-")) / "ceph.conf"
    evil.write_text(Path(ceph_conf).read_text() + "\n[client]\nclient mount uid = 0\n"
                    "client mount gid = 0\nclient permissions = false\n"
                    "admin socket = /tmp/evil.asok\nlog file = /tmp/evil.log\n")
    evil.chmod(0o644)
    out = as_user(daemon.socket_path, mount_steps(str(evil)) + [
        ["open", f"{tree}/secret", "r"], ["conf_get", "client_mount_uid"],
        ["conf_get", "client_permissions"]])
    assert out[-3][:2] == ["PermissionDenied", 13]
    assert out[-2] == ["ok", str(NOBODY)]
    assert out[-1] == ["ok", "true"]
    assert not os.path.exists("/tmp/evil.asok") and not os.path.exists("/tmp/evil.log")


def test_daemon_never_reads_a_config_file_for_the_client(daemon, ceph_conf):
    private = Path(tempfile.mkdtemp()) / "root-only.conf"
    private.write_text(Path(ceph_conf).read_text())
    private.chmod(0o600)
    out = as_user(daemon.socket_path, [["new", str(private), None]])
    assert out[0][:2] == ["PermissionDenied", 13]
    shutil.rmtree(private.parent)


# -- cephx: keyrings are read with the client's permissions ------------------------


@pytest.fixture(scope="module")
def cephx_cluster():
    directory = Path(tempfile.mkdtemp(prefix="ceph-cephx-"))
    os.chmod(directory, 0o755)
    conf = start_cluster("--dir", str(directory), "--auth", "cephx", "--osd-size", "512M")
    yield conf, directory
    subprocess.run([sys.executable, str(REPO / "tools" / "ceph-dev-cluster"), "stop",
                    "--dir", str(directory)], check=True, capture_output=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cephx_daemon(cephx_cluster):
    d = Daemon(os.path.join(public_dir("libcephfsd-cephx-"), "d.sock"))
    yield d
    assert d.stop() == 0, d.log()


def test_keyring_the_client_cannot_read_is_refused(cephx_cluster, cephx_daemon):
    conf, directory = cephx_cluster
    keyring = directory / "client.fsuser.keyring"
    assert keyring.stat().st_mode & 0o777 == 0o600 and keyring.stat().st_uid == 0
    out = as_user(cephx_daemon.socket_path, mount_steps(conf, "fsuser"))
    assert out[-1][:2] == ["PermissionDenied", 13]
    assert "cannot be read by uid 65534" in out[-1][2]
    # root may read it, so root may use it
    out = as_user(cephx_daemon.socket_path, mount_steps(conf, "fsuser") + [["stat", "/"]],
                  uid=0)
    assert out[-2] == ["ok", None] and out[-1][0] == "ok"


def test_keyring_the_client_owns_works(cephx_cluster, cephx_daemon):
    conf, directory = cephx_cluster
    own = Path(public_dir("nobody-keyring-")) / "fsuser.keyring"
    shutil.copy(directory / "client.fsuser.keyring", own)
    os.chown(own, NOBODY, NOBODY)
    own.chmod(0o600)
    out = as_user(cephx_daemon.socket_path, mount_steps(conf, "fsuser", keyring=str(own)) +
                  [["stat", "/"], ["conf_get", "keyring"]])
    assert out[-3] == ["ok", None]
    assert out[-2][0] == "ok"
    # libcephfs was given a private copy, not the client's path
    assert out[-1][0] == "ok" and out[-1][1] != str(own)
    shutil.rmtree(own.parent)


def test_wrong_key_is_refused_by_the_cluster(cephx_cluster, cephx_daemon):
    conf, _ = cephx_cluster
    bad = Path(public_dir("bad-keyring-")) / "bad.keyring"
    bad.write_text("[client.fsuser]\n\tkey = AQBqx0ZnAAAAABAAn6Zyh2zdrWmUrP8qpm0vJw==\n")
    os.chown(bad, NOBODY, NOBODY)
    out = as_user(cephx_daemon.socket_path,
                  mount_steps(conf, "fsuser", keyring=str(bad), client_mount_timeout="10"))
    assert out[-1][0] != "ok"
    shutil.rmtree(bad.parent)


def test_options_that_would_crash_the_daemon_are_its_own(daemon, ceph_conf, tree):
    """ms_type=bogus trips a ceph_assert in libcephfs at init: from a client,
    it would take the daemon down for everyone."""
    evil = Path(public_dir("crashing-conf-")) / "ceph.conf"
    evil.write_text(Path(ceph_conf).read_text() + "\n[client]\nms type = bogus\n"
                    "ms die on bug = true\nms inject socket failures = 1\nlockdep = true\n")
    evil.chmod(0o644)
    out = as_user(daemon.socket_path, [["new", ceph_conf, None],
                                       ["conf_set", "ms_type", "bogus"],
                                       ["conf_set", "ms-die-on-bad-msg", "true"],
                                       ["conf_parse_argv", ["--ms_inject_socket_failures=5"]]])
    assert [r[:2] for r in out[1:]] == [["PermissionError", 1]] * 3
    out = as_user(daemon.socket_path, mount_steps(str(evil)) + [
        ["conf_get", "ms_type"], ["conf_get", "ms_die_on_bug"],
        ["conf_get", "ms_inject_socket_failures"], ["stat", "/"]])
    assert out[-5] == ["ok", None]
    assert out[-4] == ["ok", "async+posix"] and out[-3] == ["ok", "false"]
    assert out[-2] == ["ok", "0"] and out[-1][0] == "ok"
    assert daemon.alive()
