"""Every kind of change made through the daemon reaches every client cache.

Client ``b`` caches an answer (the test checks it really answers from its
cache), a change is made through the daemon by another client ``a`` or by
``b`` itself, and ``b``'s next call must agree with a direct libcephfs client
that sees the filesystem as it is.  The daemon's cache TTL is 30 s here, so
an entry that missed its invalidation would still be served: expiry cannot
hide a bug.
"""

from __future__ import annotations

import datetime
import json
import os
import stat as st
import subprocess
import sys

import pytest

import libcephfs_proxy as proxy
from helpers import NOBODY, REPO, Daemon, public_dir, wait_for
from libcephfsd.backend import cephfs

TTL = "30"
OLD = datetime.datetime(2001, 1, 1)


@pytest.fixture(scope="module")
def cache_daemon(ceph_conf):
    d = Daemon(os.path.join(public_dir("libcephfsd-coherence-"), "d.sock"),
               "--enable-client-cache", "--cache-ttl", TTL)
    yield d
    assert d.stop() == 0, d.log()


@pytest.fixture
def clients(cache_daemon, ceph_conf, monkeypatch):
    monkeypatch.setenv("LIBCEPHFSD_SOCKET", cache_daemon.socket_path)
    made = []
    for _ in range(2):
        fs = proxy.LibCephFS(conffile=ceph_conf)
        fs.mount(filesystem_name="cephfs")
        assert fs._conn.cache is not None, "the daemon must grant the cache"
        made.append(fs)
    yield made
    for fs in made:
        fs.shutdown()


def view(fs, path: str, how: str):
    """What a client sees of *path*: comparable across clients."""
    try:
        if how == "readlink":
            return fs.readlink(path, 4096)
        if how == "xattrs":
            # CephFS shows no xattr change in stat, and xattrs are not cached:
            # what there is to see is the xattrs themselves.
            return fs.listxattr(path)
        if how == "statx":
            r = fs.statx(path, 0x1fff, 0)
            return sorted((k, v) for k, v in r.items() if k != "version")
        if how == "statx-basic":
            # Within the basic stats: the client answers it from a cached stat.
            return fs.statx(path, proxy.CEPH_STATX_BASIC_STATS, 0)
        if how == "listdir":
            d = fs.opendir(path)
            try:
                names = []
                while (e := fs.readdir(d)) is not None:
                    names.append((e.d_name, e.d_type, e.d_ino))
            finally:
                fs.closedir(d)
            return sorted(names)
        s = fs.lstat(path) if how == "lstat" else fs.stat(path)
        return (s.st_ino, s.st_mode, s.st_nlink, s.st_uid, s.st_gid, s.st_size,
                s.st_mtime, s.st_ctime)
    except (proxy.OSError, cephfs.OSError) as exc:
        return ("error", exc.errno)


def assert_cached(fs, path: str, how: str) -> None:
    view(fs, path, how)
    hits = fs._conn.cache.stats.hits
    view(fs, path, how)
    assert fs._conn.cache.stats.hits == hits + 1, f"{how} {path} was not answered from cache"


def make_file(direct, path: str, data: bytes = b"0123456789") -> None:
    fd = direct.open(path, "w", 0o644)
    direct.write(fd, data, 0)
    direct.close(fd)
    # An old ctime, so that any change (even of an xattr) shows in stat.
    direct.setattrx(path, {"ctime": OLD, "mtime": OLD}, cephfs.CEPH_SETATTR_CTIME |
                    cephfs.CEPH_SETATTR_MTIME, cephfs.AT_SYMLINK_NOFOLLOW)


def with_fd(path: str, flags: str, fn):
    def change(fs):
        fd = fs.open(path, flags, 0o644)
        try:
            fn(fs, fd)
        finally:
            fs.close(fd)
    return change


T = datetime.datetime(2020, 5, 6, 7, 8, 9)
# name -> (what b looks at: (relative path, how), the change, by fd?)
CHANGES = {
    "write": ("f", "stat", lambda p: with_fd(p("f"), "r+", lambda fs, fd: fs.write(fd, b"x" * 20, 0))),
    "pwritev": ("f", "stat", lambda p: with_fd(p("f"), "r+",
                                               lambda fs, fd: fs.pwritev(fd, [b"ab", b"c" * 30], 5))),
    "truncate": ("f", "stat", lambda p: lambda fs: fs.truncate(p("f"), 3)),
    "ftruncate": ("f", "statx", lambda p: with_fd(p("f"), "r+", lambda fs, fd: fs.ftruncate(fd, 4))),
    "fallocate": ("f", "stat", lambda p: with_fd(p("f"), "r+",
                                                 lambda fs, fd: fs.fallocate(fd, 0, 50000))),
    "chmod": ("f", "stat", lambda p: lambda fs: fs.chmod(p("f"), 0o600)),
    "fchmod": ("f", "stat", lambda p: with_fd(p("f"), "r", lambda fs, fd: fs.fchmod(fd, 0o640))),
    "lchmod": ("link", "lstat", lambda p: lambda fs: fs.lchmod(p("link"), 0o700)),
    "chown": ("f", "stat", lambda p: lambda fs: fs.chown(p("f"), 1234, 5678)),
    "fchown": ("f", "stat", lambda p: with_fd(p("f"), "r", lambda fs, fd: fs.fchown(fd, 7, 8))),
    "lchown": ("link", "lstat", lambda p: lambda fs: fs.lchown(p("link"), 9, 10)),
    "utime": ("f", "stat", lambda p: lambda fs: fs.utime(p("f"), (1000, 2000))),
    "utimes": ("f", "statx", lambda p: lambda fs: fs.utimes(p("f"), (3000.5, 4000.5))),
    "lutimes": ("link", "lstat", lambda p: lambda fs: fs.lutimes(p("link"), (5000, 6000))),
    "futime": ("f", "stat", lambda p: with_fd(p("f"), "r", lambda fs, fd: fs.futime(fd, (7, 8)))),
    "futimes": ("f", "stat", lambda p: with_fd(p("f"), "r", lambda fs, fd: fs.futimes(fd, (9, 10)))),
    "futimens": ("f", "stat", lambda p: with_fd(p("f"), "r",
                                                lambda fs, fd: fs.futimens(fd, (11, 12)))),
    "setattrx": ("f", "stat", lambda p: lambda fs: fs.setattrx(
        p("f"), {"mode": 0o604, "mtime": T}, proxy.CEPH_SETATTR_MODE | proxy.CEPH_SETATTR_MTIME, 0)),
    "fsetattrx": ("f", "stat", lambda p: with_fd(p("f"), "r", lambda fs, fd: fs.fsetattrx(
        fd, {"uid": 77}, proxy.CEPH_SETATTR_UID))),
    "setxattr": ("f", "xattrs", lambda p: lambda fs: fs.setxattr(p("f"), "user.k", b"v", 0)),
    "fsetxattr": ("f", "xattrs", lambda p: with_fd(p("f"), "r",
                                                 lambda fs, fd: fs.fsetxattr(fd, "user.k", b"v", 0))),
    "removexattr": ("x", "xattrs", lambda p: lambda fs: fs.removexattr(p("x"), "user.old")),
    "fremovexattr": ("x", "xattrs", lambda p: with_fd(p("x"), "r",
                                                    lambda fs, fd: fs.fremovexattr(fd, "user.old"))),
    "create": ("new", "stat", lambda p: lambda fs: fs.close(fs.open(p("new"), "w", 0o644))),
    "mkdir": ("new", "stat", lambda p: lambda fs: fs.mkdir(p("new"), 0o755)),
    "mknod": ("new", "lstat", lambda p: lambda fs: fs.mknod(p("new"), st.S_IFIFO | 0o600)),
    "symlink": ("new", "readlink", lambda p: lambda fs: fs.symlink("f", p("new"))),
    "link (new name)": ("new", "stat", lambda p: lambda fs: fs.link(p("f"), p("new"))),
    "link (target's nlink)": ("f", "stat", lambda p: lambda fs: fs.link(p("f"), p("new"))),
    "unlink": ("f", "stat", lambda p: lambda fs: fs.unlink(p("f"))),
    "unlink (other name's nlink)": ("hard", "stat", lambda p: lambda fs: fs.unlink(p("f"))),
    "rmdir": ("d", "stat", lambda p: lambda fs: fs.rmdir(p("d"))),
    "rename (source)": ("f", "stat", lambda p: lambda fs: fs.rename(p("f"), p("g"))),
    "rename (over a target)": ("x", "stat", lambda p: lambda fs: fs.rename(p("f"), p("x"))),
    "rename of a directory": ("d/inner", "stat", lambda p: lambda fs: fs.rename(p("d"), p("d3"))),
    "rename to a cached miss": ("g", "stat", lambda p: lambda fs: fs.rename(p("f"), p("g"))),
    "hard link chmod": ("hard", "stat", lambda p: lambda fs: fs.chmod(p("f"), 0o611)),
    "symlink in path replaced": ("sl/inner", "stat", lambda p: lambda fs: (
        fs.unlink(p("sl")), fs.symlink("d2", p("sl")))),
    "dotdot after dir rename": ("d/../f", "stat", lambda p: lambda fs: fs.rename(p("d"), p("e"))),
    "readlink after relink": ("link", "readlink", lambda p: lambda fs: (
        fs.unlink(p("link")), fs.symlink("x", p("link")))),
    "chmod (statx from stat)": ("f", "statx-basic", lambda p: lambda fs: fs.chmod(p("f"), 0o600)),
    "write (statx from stat)": ("f", "statx-basic", lambda p: with_fd(
        p("f"), "r+", lambda fs, fd: fs.write(fd, b"x" * 20, 0))),
    "create (listing)": (".", "listdir", lambda p: lambda fs: fs.close(fs.open(p("new"), "w", 0o644))),
    "mkdir (listing)": (".", "listdir", lambda p: lambda fs: fs.mkdir(p("new"), 0o755)),
    "mknod (listing)": (".", "listdir", lambda p: lambda fs: fs.mknod(p("new"), st.S_IFIFO | 0o600)),
    "symlink (listing)": (".", "listdir", lambda p: lambda fs: fs.symlink("f", p("new"))),
    "link (listing)": ("d", "listdir", lambda p: lambda fs: fs.link(p("f"), p("d/new"))),
    "unlink (listing)": (".", "listdir", lambda p: lambda fs: fs.unlink(p("f"))),
    "rmdir (listing)": (".", "listdir", lambda p: lambda fs: fs.rmdir(p("d"))),
    "rename out (listing of the source)": ("d", "listdir",
                                           lambda p: lambda fs: fs.rename(p("d/inner"), p("g"))),
    "rename in (listing of the target)": ("d2", "listdir",
                                          lambda p: lambda fs: fs.rename(p("f"), p("d2/g"))),
    "rename over (listing)": ("d2", "listdir",
                              lambda p: lambda fs: fs.rename(p("f"), p("d2/inner"))),
    "type change (listing)": (".", "listdir", lambda p: lambda fs: (
        fs.unlink(p("f")), fs.mkdir(p("f"), 0o755))),
    "dir renamed away (listing by its old path)": ("d", "listdir",
                                                   lambda p: lambda fs: fs.rename(p("d"), p("e"))),
}


def build_tree(direct, base: str) -> None:
    make_file(direct, f"{base}/f")
    make_file(direct, f"{base}/x", b"xx")
    direct.setxattr(f"{base}/x", "user.old", b"1", 0)
    direct.setattrx(f"{base}/x", {"ctime": OLD}, cephfs.CEPH_SETATTR_CTIME, 0)
    direct.link(f"{base}/f", f"{base}/hard")
    direct.symlink("f", f"{base}/link")
    direct.mkdir(f"{base}/d", 0o755)
    make_file(direct, f"{base}/d/inner", b"in d")
    direct.mkdir(f"{base}/d2", 0o755)
    make_file(direct, f"{base}/d2/inner", b"in d2, longer")
    direct.symlink("d", f"{base}/sl")


@pytest.mark.parametrize("through", ["other client", "same client"])
@pytest.mark.parametrize("name", list(CHANGES))
def test_change_is_seen_by_the_next_call(name, through, clients, direct_fs, workdir):
    a, b = clients
    base = f"{workdir}/t"
    direct_fs.mkdir(base, 0o777)
    build_tree(direct_fs, base)
    if name in ("rmdir", "rmdir (listing)"):
        direct_fs.unlink(f"{base}/d/inner")
    rel, how, change = CHANGES[name]
    path = f"{base}/{rel}"
    before = view(b, path, how)
    if how != "xattrs":
        assert_cached(b, path, how)
    change(lambda r: f"{base}/{r}")(a if through == "other client" else b)
    expected = view(direct_fs, path, how)
    assert expected != before, "the change must be visible in what the test compares"
    assert view(b, path, how) == expected


def test_fstat_is_invalidated_by_writes_through_another_fd(clients, direct_fs, workdir):
    a, b = clients
    make_file(direct_fs, f"{workdir}/f")
    fd = b.open(f"{workdir}/f", "r")
    size = b.fstat(fd).st_size
    hits = b._conn.cache.stats.hits
    assert b.fstat(fd).st_size == size and b._conn.cache.stats.hits == hits + 1
    with_fd(f"{workdir}/f", "r+", lambda fs, fd2: fs.write(fd2, b"y" * 99, 0))(a)
    assert b.fstat(fd).st_size == 99
    b.close(fd)


def test_relative_paths_follow_the_cwd(clients, direct_fs, workdir):
    a, b = clients
    for d in ("one", "two"):
        direct_fs.mkdir(f"{workdir}/{d}", 0o755)
        make_file(direct_fs, f"{workdir}/{d}/f", d.encode() * 3)
    b.chdir(f"{workdir}/one")
    assert b.stat("f").st_size == 9
    b.chdir(f"{workdir}/two")
    assert b.stat("f").st_size == 9 and b.stat("f").st_ino == direct_fs.stat(
        f"{workdir}/two/f").st_ino


NOBODY_OBSERVER = r"""
import json, sys, libcephfs_proxy as cephfs
conf, path, how = sys.argv[1], sys.argv[2], sys.argv[3]
fs = cephfs.LibCephFS(conffile=conf)
fs.mount(filesystem_name="cephfs")
def listing():
    d = fs.opendir(path)
    names = []
    while (e := fs.readdir(d)) is not None:
        names.append(e.d_name.decode())
    fs.closedir(d)
    return sorted(names)
def look():
    try:
        return ["ok", fs.stat(path).st_size if how == "stat" else listing()]
    except cephfs.OSError as exc:
        return ["error", exc.errno]
for line in sys.stdin:
    hits = fs._conn.cache.stats.hits
    result = look()
    print(json.dumps(result + [fs._conn.cache.stats.hits - hits]), flush=True)
"""


@pytest.mark.parametrize("how", ["stat", "listdir"])
def test_losing_search_permission_on_a_directory_invalidates_lookups_beneath(
        how, cache_daemon, ceph_conf, direct_fs, workdir, clients):
    a, _ = clients
    direct_fs.chmod(workdir, 0o755)
    direct_fs.mkdir(f"{workdir}/guarded", 0o755)
    make_file(direct_fs, f"{workdir}/guarded/f")
    path, seen = ((f"{workdir}/guarded/f", 10) if how == "stat"
                  else (f"{workdir}/guarded", [".", "..", "f"]))
    observer = subprocess.Popen(
        [sys.executable, "-c", NOBODY_OBSERVER, ceph_conf, path, how],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, user=NOBODY, group=NOBODY,
        env={"LIBCEPHFSD_SOCKET": cache_daemon.socket_path, "PYTHONPATH": str(REPO)}, cwd="/")

    def ask():
        observer.stdin.write("\n")
        observer.stdin.flush()
        return json.loads(observer.stdout.readline())

    try:
        assert ask()[:2] == ["ok", seen]
        assert ask() == ["ok", seen, 1]        # answered from its cache
        a.chmod(f"{workdir}/guarded", 0o700)    # root-owned: nobody loses search permission
        assert ask()[:2] == ["error", 13]
    finally:
        observer.stdin.close()
        observer.wait(30)
        observer.stdout.close()


def test_one_answer_serves_stat_lstat_and_basic_statx_only_where_equal(clients, direct_fs,
                                                                        workdir):
    _, b = clients
    make_file(direct_fs, f"{workdir}/f")
    direct_fs.symlink("f", f"{workdir}/link")
    stats = b._conn.cache.stats

    def hits(call, *args):
        before = stats.hits
        result = call(*args)
        return result, stats.hits - before

    f, link = f"{workdir}/f", f"{workdir}/link"
    fst, n = hits(b.stat, f)
    assert n == 0
    assert hits(b.lstat, f) == (fst, 1)               # not a symlink: the same answer
    sx, n = hits(b.statx, f, proxy.CEPH_STATX_BASIC_STATS, 0)
    assert n == 1 and sx == direct_fs.statx(f, proxy.CEPH_STATX_BASIC_STATS, 0)
    assert hits(b.statx, f, proxy.CEPH_STATX_MODE | proxy.CEPH_STATX_SIZE, 0) == (
        {"mode": fst.st_mode, "size": 10}, 1)
    assert hits(b.statx, f, proxy.CEPH_STATX_BTIME, 0)[1] == 0   # beyond a stat: asked
    # A symlink: its lstat does not answer its stat, nor the reverse.
    lst, _ = hits(b.lstat, link)
    target, n = hits(b.stat, link)
    assert st.S_ISLNK(lst.st_mode) and n == 0 and target == fst
    assert hits(b.statx, link, proxy.CEPH_STATX_INO, proxy.AT_SYMLINK_NOFOLLOW) == (
        {"ino": lst.st_ino}, 1)
    assert hits(b.statx, link, proxy.CEPH_STATX_INO, 0) == ({"ino": fst.st_ino}, 1)
    # A missing name: one answer, an error, for all three.
    for call, expected_hits in ((b.lstat, 0), (b.stat, 1)):
        before_hits = stats.hits
        with pytest.raises(proxy.ObjectNotFound):
            call(f"{workdir}/nope")
        assert stats.hits == before_hits + expected_hits
    before = (stats.hits, stats.misses)
    with pytest.raises(proxy.ObjectNotFound):
        b.statx(f"{workdir}/nope", proxy.CEPH_STATX_MODE, 0)
    assert (stats.hits, stats.misses) == (before[0] + 1, before[1])
    # A basic statx of a name not cached yet is asked as an lstat: its
    # answer then serves stat and lstat too.
    g = f"{workdir}/g"
    make_file(direct_fs, g)
    assert hits(b.statx, g, proxy.CEPH_STATX_MODE | proxy.CEPH_STATX_INO, 0) == (
        {"mode": direct_fs.stat(g).st_mode, "ino": direct_fs.stat(g).st_ino}, 0)
    assert hits(b.stat, g)[1] == 1 and hits(b.lstat, g)[1] == 1


def content(fs, path: str) -> bytes:
    fd = fs.open(path, "r")
    try:
        return fs.read(fd, 0, 1 << 16)
    finally:
        fs.close(fd)


CONTENT_CHANGES = {
    "write": lambda path: with_fd(path, "r+", lambda fs, fd: fs.write(fd, b"new", 2)),
    "pwritev": lambda path: with_fd(path, "r+", lambda fs, fd: fs.pwritev(fd, [b"ab", b"cd"], 12)),
    "truncate": lambda path: lambda fs: fs.truncate(path, 4),
    "ftruncate": lambda path: with_fd(path, "r+", lambda fs, fd: fs.ftruncate(fd, 30)),
    "rewrite": lambda path: with_fd(path, "w", lambda fs, fd: fs.write(fd, b"other", 0)),
}


@pytest.mark.parametrize("name, through", [
    (name, through) for name in CONTENT_CHANGES
    for through in ("other client", "same client", "another cephfs client")
    # Not through the daemon, only data writes are signalled (libcephfs's
    # invalidation callback, its cache holding the data since the open):
    # a truncation waits for the TTL.
    if through != "another cephfs client" or name not in ("truncate", "ftruncate")])
def test_an_open_files_content_and_fstat_follow_changes(name, through, clients, direct_fs,
                                                         workdir):
    # OPEN_READ brought the content and fstat with the open: reads through the
    # fd answered from them must still see every change made meanwhile.
    a, b = clients
    path = f"{workdir}/f"
    make_file(direct_fs, path)
    fd = b.open(path, "r")
    try:
        stats = b._conn.cache.stats
        hits = stats.hits
        assert b.read(fd, 0, 100) == b"0123456789" and b.read(fd, 8, 100) == b"89"
        assert b.fstat(fd).st_size == 10 and stats.hits == hits + 3, "answered from the open"
        writer = {"other client": a, "same client": b, "another cephfs client": direct_fs}
        CONTENT_CHANGES[name](path)(writer[through])
        # The truth: what the writer's own mount reads now (a direct read
        # right after the daemon's mount wrote waits seconds for its caps).
        if through == "another cephfs client":
            expected = content(direct_fs, path)
            wait_for(lambda: b.read(fd, 0, 100) == expected, timeout=10,
                     what="the change, through the open fd")
        else:
            expected = content(a, path)
        assert expected != b"0123456789"
        assert b.read(fd, 0, 100) == expected
        assert b.fstat(fd).st_size == len(expected)
    finally:
        b.close(fd)
