"""The same calls, direct through libcephfs and through libcephfsd, give the same answers.

Each scenario runs twice on the real cluster: with the ``cephfs`` binding in
this process, and with ``libcephfs_proxy`` through a real daemon, each in its
own fresh directory.  Results are compared after replacing what must differ
(inode numbers, the directory name, times) by placeholders.  Errors are part
of the result: exception class, errno and message.
"""

from __future__ import annotations

import datetime
import os
import re
import stat

import pytest

import libcephfs_proxy
from helpers import evict
from libcephfsd.backend import cephfs

SCENARIOS = []


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def outcome(fn, *args, **kwargs):
    """What a call gives: its result, or the error it raises (class, errno, text)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return ("raise", type(exc).__name__, getattr(exc, "errno", None), str(exc))


def normalize(value, base: str):
    if isinstance(value, (list, tuple)):
        return type(value)(normalize(v, base) for v in value) if not hasattr(value, "_fields") \
            else type(value)._make(normalize(v, base) for v in value)
    if isinstance(value, dict):
        return {k: normalize(v, base) for k, v in value.items()}
    if isinstance(value, datetime.datetime):
        return "<time>"
    if isinstance(value, int) and 1 << 40 <= value < 1 << 50:
        return "<ino>"  # CephFS inode numbers start at 2**40
    if isinstance(value, bytes):
        return value.replace(base.encode(), b"<base>")
    if isinstance(value, str):
        # The only intended difference: type errors name this library's class.
        value = value.replace("libcephfs_proxy.DirResult", "cephfs.DirResult")
        return re.sub(r"\d{6,}", "<n>", value.replace(base, "<base>"))
    return value


@scenario
def files_and_data(fs, mod, base):
    out = []
    fd = fs.open(f"{base}/f", "w", 0o640)
    out.append(outcome(fs.write, fd, b"hello world", 0))
    out.append(outcome(fs.write, fd, b"!", 11))
    out.append(outcome(fs.fstat, fd))
    fs.close(fd)
    st = fs.stat(f"{base}/f")
    out.append((stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_nlink,
                st.st_uid, st.st_gid, type(st.st_mtime).__name__))
    for flags in ("r", "r+", "rw", "w+", "", os.O_RDONLY):
        fd = fs.open(f"{base}/f", "r")
        out.append(outcome(fs.read, fd, 0, 100))
        out.append(outcome(fs.read, fd, 6, 3))
        out.append(outcome(fs.read, fd, -1, 5))
        out.append(outcome(fs.read, fd, 100, 5))
        fs.close(fd)
        # fd numbers differ between mounts: compare whether it opened
        out.append(outcome(lambda f: fs.close(fs.open(f"{base}/f", f)), flags))
    out.append(outcome(fs.open, f"{base}/f", "a"))
    out.append(outcome(fs.open, f"{base}/f", "+r"))
    out.append(outcome(fs.open, f"{base}/f", 1.5))
    out.append(outcome(fs.open, f"{base}/missing", "r"))
    fd = fs.open(f"{base}/f", "r+")
    out.append(outcome(fs.lseek, fd, 3, os.SEEK_SET))
    out.append(outcome(fs.read, fd, -1, 4))
    out.append(outcome(fs.lseek, fd, 0, os.SEEK_END))
    out.append(outcome(fs.ftruncate, fd, 5))
    out.append(outcome(fs.fsync, fd, 0))
    out.append(outcome(fs.fsync, fd, 1))
    out.append(outcome(fs.fallocate, fd, 0, 4096, 0))
    out.append(outcome(fs.fstat, fd))
    out.append(outcome(fs.flock, fd, 2 | 4, 1234))  # LOCK_EX | LOCK_NB
    out.append(outcome(fs.flock, fd, 8, 1234))      # LOCK_UN
    bufs = [bytearray(2), bytearray(3), bytearray(10)]
    out.append(outcome(fs.preadv, fd, bufs, 0))
    out.append([bytes(b) for b in bufs])
    out.append(outcome(fs.pwritev, fd, [b"ab", b"cde"], 1))
    out.append(outcome(fs.read, fd, 0, 20))
    out.append(outcome(fs.get_file_replication, fd))
    out.append(outcome(fs.get_layout, fd))
    out.append(outcome(fs.lazyio, fd, 1))
    out.append(outcome(fs.lazyio_propagate, fd, 0, 10))
    out.append(outcome(fs.lazyio_synchronize, fd, 0, 10))
    out.append(outcome(fs.debug_get_fd_caps, fd) [0])
    fs.close(fd)
    out.append(outcome(fs.close, fd))
    out.append(outcome(fs.truncate, f"{base}/f", 2))
    out.append(fs.stat(f"{base}/f").st_size)
    # type errors, in the binding's order and words
    out.append(outcome(fs.write, fd, "text", 0))
    out.append(outcome(fs.read, "x", 0, 1))
    out.append(outcome(fs.read, 1, "0", 1))
    out.append(outcome(fs.open, 42, "r"))
    out.append(outcome(fs.fsync, "x", 0))
    out.append(outcome(fs.preadv, 1, [b"x"], 0))
    out.append(outcome(fs.pwritev, 1, [bytearray(1)], 0))
    out.append(outcome(fs.truncate, f"{base}/f", "1"))
    return out


@scenario
def large_io_beyond_one_request(fs, mod, base):
    data = os.urandom(9 << 20) + b"tail"   # more than two of the daemon's max_data
    fd = fs.open(f"{base}/big", os.O_CREAT | os.O_RDWR, 0o644)
    wrote = fs.write(fd, data, 0)
    back = fs.read(fd, 0, len(data) + 100)
    at_pos = fs.read(fd, -1, 1000)
    bufs = [bytearray(5 << 20), bytearray(5 << 20)]
    got = fs.preadv(fd, bufs, 0)
    fs.close(fd)
    return [wrote, back == data, len(back), at_pos == data[:1000], got,
            bytes(bufs[0]) + bytes(bufs[1])[:got - len(bufs[0])] == data]


@scenario
def metadata(fs, mod, base):
    out = []
    fs.mkdir(f"{base}/d", 0o755)
    out.append(outcome(fs.mkdir, f"{base}/d", 0o755))
    out.append(outcome(fs.mkdir, f"{base}/d2", "755"))
    out.append(outcome(fs.mkdirs, f"{base}/a/b/c", 0o700))
    out.append(outcome(fs.rmdir, f"{base}/a"))
    out.append(stat.S_IMODE(fs.stat(f"{base}/a/b/c").st_mode))
    for mask in (mod.CEPH_STATX_BASIC_STATS, mod.CEPH_STATX_MODE | mod.CEPH_STATX_SIZE,
                 mod.CEPH_STATX_BTIME | mod.CEPH_STATX_VERSION | mod.CEPH_STATX_INO, 0):
        r = fs.statx(f"{base}/d", mask, mod.AT_SYMLINK_NOFOLLOW)
        out.append(sorted(r))
    out.append(outcome(fs.statx, f"{base}/nope", mod.CEPH_STATX_MODE, 0))
    out.append(outcome(fs.statx, f"{base}/d", "1", 0))
    out.append(outcome(fs.stat, f"{base}/nope"))
    out.append(outcome(fs.lstat, f"{base}/nope"))
    fs.symlink("d", f"{base}/ln")
    fs.symlink(f"{base}/nope", f"{base}/dangling")
    out.append(outcome(fs.readlink, f"{base}/ln", 100))
    out.append(outcome(fs.readlink, f"{base}/ln", 1))
    out.append(outcome(fs.readlink, f"{base}/d", 100))
    out.append(stat.S_ISLNK(fs.lstat(f"{base}/ln").st_mode))
    out.append(stat.S_ISDIR(fs.stat(f"{base}/ln").st_mode))
    out.append(outcome(fs.stat, f"{base}/dangling"))
    fs.chmod(f"{base}/d", 0o711)
    out.append(stat.S_IMODE(fs.stat(f"{base}/d").st_mode))
    out.append(outcome(fs.lchmod, f"{base}/ln", 0o700))
    out.append(outcome(fs.chown, f"{base}/d", 1000, 1000))
    out.append(outcome(fs.lchown, f"{base}/ln", 1001, 1001))
    out.append((fs.stat(f"{base}/d").st_uid, fs.lstat(f"{base}/ln").st_uid))
    out.append(outcome(fs.chown, f"{base}/d", "0", 0))
    fs.utime(f"{base}/d", (1000, 2000))
    s = fs.stat(f"{base}/d")
    out.append((s.st_atime.timestamp(), s.st_mtime.timestamp()))
    out.append(outcome(fs.utime, f"{base}/d", (1.5, 2)))
    fs.utimes(f"{base}/d", (3000.25, 4000.75))
    s = fs.statx(f"{base}/d", mod.CEPH_STATX_ATIME | mod.CEPH_STATX_MTIME, 0)
    out.append((s["atime"].timestamp(), s["mtime"].timestamp()))
    fs.lutimes(f"{base}/ln", (5000, 6000))
    out.append(fs.lstat(f"{base}/ln").st_mtime.timestamp())
    when = datetime.datetime(2001, 2, 3, 4, 5, 6)
    fs.setattrx(f"{base}/d", {"mode": 0o750, "mtime": when}, mod.CEPH_SETATTR_MODE |
                mod.CEPH_SETATTR_MTIME, 0)
    s = fs.stat(f"{base}/d")
    out.append((stat.S_IMODE(s.st_mode), s.st_mtime == when))
    out.append(outcome(fs.setattrx, f"{base}/d", {"mode": 0o750}, mod.CEPH_SETATTR_UID, 0))
    out.append(outcome(fs.setattrx, f"{base}/d", [], 0, 0))
    fs.mknod(f"{base}/fifo", stat.S_IFIFO | 0o600)
    out.append(stat.S_ISFIFO(fs.stat(f"{base}/fifo").st_mode))
    fd = fs.open(f"{base}/file", "w", 0o600)
    fs.fchmod(fd, 0o604)
    fs.fchown(fd, 7, 8)
    fs.futime(fd, (10, 20))
    out.append(fs.fstat(fd)[2:6])
    fs.futimes(fd, (30.5, 40.5))
    fs.futimens(fd, (50.25, 60.25))
    out.append(fs.fstat(fd).st_mtime.timestamp())
    fs.fsetattrx(fd, {"size": 33}, mod.CEPH_SETATTR_SIZE)
    out.append(fs.fstat(fd).st_size)
    fs.close(fd)
    fs.link(f"{base}/file", f"{base}/hard")
    out.append(fs.stat(f"{base}/hard").st_nlink)
    out.append(outcome(fs.link, f"{base}/file", f"{base}/hard"))
    fs.rename(f"{base}/hard", f"{base}/hard2")
    out.append(outcome(fs.rename, f"{base}/nope", f"{base}/x"))
    out.append(outcome(fs.unlink, f"{base}/hard"))
    out.append(outcome(fs.rmdir, f"{base}/a/b"))
    out.append(outcome(fs.unlink, f"{base}/d"))
    # statfs counts the whole filesystem, which other tests change: keys only
    out.append(outcome(lambda p: sorted(fs.statfs(p)), f"{base}/nope"))
    out.append(sorted(fs.statfs(base)))
    out.append(outcome(fs.get_path_replication, f"{base}/file"))
    out.append(outcome(fs.debug_get_file_caps, f"{base}/file")[0])
    return out


@scenario
def xattrs(fs, mod, base):
    out = []
    fd = fs.open(f"{base}/x", "w", 0o644)
    fs.symlink("x", f"{base}/lx")
    out.append(outcome(fs.setxattr, f"{base}/x", "user.a", b"1", 0))
    out.append(outcome(fs.setxattr, f"{base}/x", b"user.b", b"22" * 100, 0))
    out.append(outcome(fs.setxattr, f"{base}/x", "user.a", b"1", 1))   # XATTR_CREATE
    out.append(outcome(fs.setxattr, f"{base}/x", "user.a", "str", 0))
    out.append(outcome(fs.getxattr, f"{base}/x", "user.a"))
    out.append(outcome(fs.getxattr, f"{base}/x", "user.b"))
    out.append(outcome(fs.getxattr, f"{base}/x", "user.b", 400))
    out.append(outcome(fs.getxattr, f"{base}/x", "user.missing"))
    out.append(outcome(fs.getxattr, f"{base}/lx", "user.a"))
    out.append(outcome(fs.lgetxattr, f"{base}/lx", "user.a"))
    out.append(outcome(fs.listxattr, f"{base}/x"))
    out.append(outcome(fs.listxattr, f"{base}/x", 5))
    out.append(outcome(fs.llistxattr, f"{base}/lx"))
    out.append(outcome(fs.fsetxattr, fd, "user.c", b"3", 0))
    out.append(outcome(fs.fgetxattr, fd, "user.c"))
    out.append(outcome(fs.flistxattr, fd))
    out.append(outcome(fs.fremovexattr, fd, "user.c"))
    out.append(outcome(fs.removexattr, f"{base}/x", "user.a"))
    out.append(outcome(fs.removexattr, f"{base}/x", "user.a"))
    out.append(outcome(fs.lsetxattr, f"{base}/lx", "trusted.t", b"v", 0))
    out.append(outcome(fs.lremovexattr, f"{base}/lx", "trusted.t"))
    fs.close(fd)
    return out


@scenario
def directories(fs, mod, base):
    out = []
    for i in range(300):
        fs.close(fs.open(f"{base}/e{i:03d}", "w"))
    fs.mkdir(f"{base}/sub", 0o755)
    d = fs.opendir(base)
    first = [fs.readdir(d) for _ in range(3)]
    pos = fs.telldir(d)
    rest = []
    while (e := fs.readdir(d)) is not None:
        rest.append(e)
    out.append(fs.readdir(d))
    fs.seekdir(d, pos)
    again = []
    while (e := d.readdir()) is not None:
        again.append(e)
    out.append([e.d_name for e in again] == [e.d_name for e in rest])
    out.append(len(first) + len(rest))
    names = sorted(e.d_name for e in first + rest)
    out.append(names[:4])
    kinds = {e.d_name: (e.is_dir(), e.is_file(), e.is_symbol_file(), e.d_type)
             for e in first + rest}
    out.append([kinds[b"."], kinds[b"sub"], kinds[b"e000"]])
    fs.rewinddir(d)
    out.append(fs.readdir(d).d_name)
    out.append(outcome(fs.seekdir, d, "0"))
    fs.closedir(d)
    out.append(outcome(fs.readdir, "not a handle"))
    out.append(outcome(d.rewinddir))
    out.append(outcome(d.telldir))
    out.append(outcome(d.close))
    out.append(outcome(fs.opendir, f"{base}/nope"))
    out.append(outcome(fs.opendir, f"{base}/e000"))
    with fs.opendir(f"{base}/sub") as d2:
        out.append(sorted(e.d_name for e in iter(d2.readdir, None)))
    return out


@scenario
def small_directories(fs, mod, base):
    # Read whole in one LISTDIR through the daemon (no handle stays open
    # there): positions, seeks and rewinds must still behave as libcephfs's.
    out = []
    for name in ("a", "b", "c"):
        fs.close(fs.open(f"{base}/{name}", "w"))
    names = lambda d: [e.d_name for e in iter(d.readdir, None)]  # noqa: E731
    d = fs.opendir(base)
    start = fs.telldir(d)
    head = [fs.readdir(d).d_name for _ in range(2)]
    pos = fs.telldir(d)
    rest = names(d)
    out.append(sorted(head + rest))
    out.append(fs.readdir(d))
    fs.seekdir(d, pos)
    out.append(names(d) == rest)
    fs.seekdir(d, start)
    out.append(sorted(names(d)))
    # rewinddir shows the directory as it is now.
    fs.close(fs.open(f"{base}/new", "w"))
    fs.unlink(f"{base}/a")
    fs.rewinddir(d)
    out.append(sorted(names(d)))
    fs.seekdir(d, pos)
    out.append(len(names(d)))
    fs.closedir(d)
    out.append(outcome(d.telldir))          # (readdir of a closed handle crashes the binding)
    with fs.opendir(base) as d2:
        first = sorted(names(d2))
        d2.rewinddir()
        out.append(first == sorted(names(d2)) == [b".", b"..", b"b", b"c", b"new"])
    fs.mkdir(f"{base}/closed", 0o700)
    fs.chmod(f"{base}/closed", 0o000)
    out.append(sorted(names(fs.opendir(f"{base}/closed"))))     # root reads it anyway
    fs.close(fs.open(f"{base}/file", "w"))
    out.append(outcome(fs.opendir, f"{base}/file"))
    out.append(outcome(fs.opendir, f"{base}/file/"))
    fs.symlink("b", f"{base}/to-b")
    fs.symlink(".", f"{base}/to-here")
    out.append(outcome(fs.opendir, f"{base}/to-b"))
    out.append(sorted(names(fs.opendir(f"{base}/to-here"))) == sorted(names(fs.opendir(base))))
    return out


@scenario
def cwd_and_relative_paths(fs, mod, base):
    out = []
    fs.mkdirs(f"{base}/real/inner", 0o755)
    fs.symlink("real", f"{base}/alias")
    fs.chdir(base)
    out.append(fs.getcwd())
    fs.chdir("alias/inner")
    out.append(fs.getcwd())
    fs.chdir("..")
    out.append(fs.getcwd())
    fd = fs.open("rel", "w", 0o644)
    fs.write(fd, b"relative", 0)
    fs.close(fd)
    out.append(fs.stat(f"{base}/real/rel").st_size)
    out.append(outcome(fs.stat, "inner/../rel"))
    # Path shapes the daemon's cache walk must judge as libcephfs does.
    fs.symlink("rel", "lnk")
    for shape in ("rel/", "rel/.", "rel/..", "rel/x", "lnk/", "lnk/.", "./rel", ".//rel",
                  "inner/.", "inner/..", "inner/../..", "/" + base.lstrip("/") + "//real/rel",
                  "nope/", "nope/..", "lnk/.."):
        for call in (fs.stat, fs.lstat):
            # twice: the second may come from a cache
            out.append((shape, outcome(call, shape), outcome(call, shape)))
        out.append((shape, outcome(fs.statx, shape, mod.CEPH_STATX_INO, 0),
                    outcome(fs.readlink, shape, 100)))
        out.append((shape, outcome(fs.chdir, shape), fs.getcwd()))
        fs.chdir(f"{base}/real")
    out.append(outcome(fs.chdir, "rel"))
    out.append(outcome(fs.chdir, "nope"))
    fs.chdir("/")
    out.append(fs.getcwd())
    out.append(outcome(fs.umask, 0o077))
    out.append(outcome(fs.umask, 0o022))
    return out


@scenario
def cluster_and_pools(fs, mod, base):
    out = [fs.version(), outcome(fs.get_fscid), type(fs.get_instance_id()).__name__]
    pool = fs.get_default_pool()
    out.append(pool)
    out.append(outcome(fs.get_pool_id, pool["pool_name"]))
    out.append(outcome(fs.get_pool_replication, pool["pool_id"]))
    out.append(outcome(fs.get_pool_id, "no-such-pool"))
    out.append(type(fs.get_addrs()).__name__)
    out.append(outcome(fs.get_cap_return_timeout))
    out.append(outcome(fs.conf_get, "client_permissions"))
    out.append(outcome(fs.conf_get, "no_such_option"))
    out.append(outcome(fs.sync_fs))
    out.append(outcome(fs.mksnap, base, "s1", 0o755, {"k": "v"}))
    info = outcome(fs.snap_info, f"{base}/.snap/s1")
    out.append((info[0], sorted(info[1]), info[1]["metadata"]) if info[0] == "ok" else info)
    out.append(outcome(fs.rmsnap, base, "s1"))
    out.append(outcome(fs.mksnap, base, "s2", 0o755, {"k": 1}))
    return out


@pytest.mark.parametrize("scenario_fn", SCENARIOS, ids=[f.__name__ for f in SCENARIOS])
def test_same_results_direct_and_through_the_daemon(scenario_fn, direct_fs, fs, workdir):
    direct_base, proxy_base = f"{workdir}/direct", f"{workdir}/proxy"
    direct_fs.mkdir(direct_base, 0o755)
    direct_fs.mkdir(proxy_base, 0o755)
    try:
        expected = normalize(scenario_fn(direct_fs, cephfs, direct_base), direct_base)
    finally:
        direct_fs.chdir("/")
    got = normalize(scenario_fn(fs, libcephfs_proxy, proxy_base), proxy_base)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"step {i}: proxy {g!r} != direct {e!r}"


def test_state_machine_matches(proxy_env, ceph_conf):
    for mod in (cephfs, libcephfs_proxy):
        fs = mod.LibCephFS(conffile=ceph_conf)
        assert fs.state == "configuring"
        with pytest.raises(mod.LibCephFSStateError, match="in state configuring"):
            fs.stat("/")
        fs.shutdown()
        assert fs.state == "configuring"
        fs.init()
        assert fs.state == "initialized"
        assert isinstance(fs.get_instance_id(), int)
        with pytest.raises(mod.LibCephFSStateError):
            fs.init()
        fs.mount(filesystem_name="cephfs")
        assert fs.state == "mounted"
        with pytest.raises(mod.LibCephFSStateError):
            fs.mount()
        fs.unmount()
        assert fs.state == "initialized"
        fs.mount(filesystem_name="cephfs")
        assert fs.stat("/").st_ino == 1
        instance = fs.get_instance_id()
        fs.abort_conn()
        assert fs.state == "initialized"
        if mod is cephfs:
            # A direct abort leaves the MDS session (and its caps) to time out,
            # stalling every other client for a minute: evict it now.  Through
            # the daemon, ABORT_CONN only leaves the shared mount.
            evict(ceph_conf, instance)
        fs.shutdown()
        assert fs.state == "shutdown"
        with mod.LibCephFS(conffile=ceph_conf, conf={"client_permissions": "true"}) as fs2:
            assert fs2.state == "mounted"
        assert fs2.state == "shutdown"
        with pytest.raises(TypeError, match="conf must be dict or None"):
            mod.LibCephFS(conf=[("a", "b")])
        with pytest.raises(TypeError, match="configfile must be encodeable"):
            mod.LibCephFS(conffile=mod.LibCephFS.NO_CONF_FILE)
        with pytest.raises(mod.ObjectNotFound, match="error calling conf_set"):
            mod.LibCephFS(conffile=ceph_conf, conf={"no_such_option": "1"})
        with pytest.raises(mod.ObjectNotFound, match="error calling conf_read_file"):
            mod.LibCephFS(conffile="/nonexistent/ceph.conf")
