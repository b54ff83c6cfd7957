"""Randomized: several client processes read and change a small shared tree
through one caching daemon; a checker proves no read returned a value older
than a change that had already returned.

Every change gives a file a version no other change gives (its size), or
removes it, or creates it empty.  Reads are stat, lstat, statx, or whether
the directory's listing holds the name, and fstat or the whole content
read through a file opened read-only.  Half the files only change size (by path
and through fds: their names never change inode); the others are also
removed and created again (by path, atomically).  Each operation is recorded with CLOCK_MONOTONIC times taken
just before the call and just after it returned (the clock is shared by all
processes of the host).  A read that returned the value of change C is
stale if some change C2 of the same path started after C had returned and
itself returned before the read started: the read then ignored C2.

Replay: LIBCEPHFSD_TEST_SEED=<seed>; length: LIBCEPHFSD_TEST_SECONDS.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys


import pytest

from helpers import Daemon, public_dir

SEED = int(os.environ.get("LIBCEPHFSD_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
SECONDS = float(os.environ.get("LIBCEPHFSD_TEST_SECONDS", "8"))
CLIENTS = 5
FILES = 6

WORKER = r"""
import json, os, random, sys, time, libcephfs_proxy as cephfs
conf, base, seed, n, seconds, files = sys.argv[1:7]
n, seconds, files = int(n), float(seconds), int(files)
rng = random.Random(int(seed) * 1000 + n)
fs = cephfs.LibCephFS(conffile=conf)
fs.mount(filesystem_name="cephfs")
paths = [f"{base}/d{i % 2}/f{i}" for i in range(files)]
log, version = [], 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    path = rng.choice(paths)
    r = rng.random()
    t0 = time.monotonic()
    if r < 0.70:
        hits = fs._conn.cache.stats.hits
        how = rng.random()
        try:
            if how < 0.15:
                # Whether the directory's listing has the name: -2 for "there".
                d = fs.opendir(path.rsplit("/", 1)[0])
                names = []
                while (e := fs.readdir(d)) is not None:
                    names.append(e.d_name)
                fs.closedir(d)
                value = -2 if path.rsplit("/", 1)[1].encode() in names else -1
            elif how < 0.4:
                value = fs.stat(path).st_size
            elif how < 0.55:
                value = fs.lstat(path).st_size
            elif how < 0.7:
                value = fs.statx(path, cephfs.CEPH_STATX_SIZE, 0)["size"]
            else:
                # Through an open file: its fstat, or its whole content
                # (truncation fills with zeros, so the length is the size).
                fd = fs.open(path, "r")
                try:
                    if how < 0.85:
                        value = fs.fstat(fd).st_size
                    else:
                        value = len(fs.read(fd, 0, 1 << 20))
                finally:
                    fs.close(fd)
        except cephfs.ObjectNotFound:
            value = -1
        log.append(["read", path, value, t0, time.monotonic(),
                    f"client {n} {'hit' if fs._conn.cache.stats.hits > hits else 'miss'}"])
        continue
    # a unique version: client number in the low bits
    version += 1
    value = version * 16 + n + 1
    stable = paths.index(path) < files // 2
    try:
        how = "truncate"
        if r < 0.85 or (stable and r >= 0.90):
            fs.truncate(path, value)
        elif stable:
            how = "ftruncate"
            # Through an fd: on these files no name ever changes inode, so
            # the fd's inode is the path's.
            fd = fs.open(path, "r+")
            fs.ftruncate(fd, value)
            fs.close(fd)
        elif r < 0.94:
            fs.mknod(path, 0o100644)      # atomic create of an empty file
            value, how = 0, "mknod"
        else:
            fs.unlink(path)
            value, how = -1, "unlink"
    except (cephfs.ObjectNotFound, cephfs.ObjectExists):
        log.append(["failed", path, None, t0, time.monotonic()])
        continue
    log.append(["change", path, value, t0, time.monotonic(), f"client {n} {how}"])
print(json.dumps({"log": log, "hits": fs._conn.cache.stats.hits,
                  "misses": fs._conn.cache.stats.misses,
                  "invalidations": fs._conn.cache.stats.invalidations}))
fs.shutdown()
"""


@pytest.fixture(scope="module")
def cache_daemon(ceph_conf):
    # A long TTL: a missed invalidation would stay visible for the whole run.
    d = Daemon(os.path.join(public_dir("libcephfsd-random-"), "d.sock"),
               "--enable-client-cache", "--cache-ttl", "30")
    yield d
    assert d.stop() == 0, d.log()


def find_stale_reads(entries: list[list]) -> list[str]:
    """Reads that ignored a change completed before they began (see module doc)."""
    problems = []
    by_path: dict[str, list] = {}
    for kind, path, value, t0, t1, *who in entries:
        by_path.setdefault(path, []).append((kind, value, t0, t1, " ".join(who)))
    for path, ops in by_path.items():
        changes = [op for op in ops if op[0] == "change"]
        # Initially each file exists with a size no change produces (0 here).
        producers: dict[int, list] = {0: [("initial", 0, float("-inf"), float("-inf"), "")]}
        for c in changes:
            producers.setdefault(c[1], []).append(c)
        for kind, value, t0, t1, who in ops:
            if kind != "read":
                continue
            if value == -2:     # a listing showed the name: any version but "removed"
                candidates = [c for v, cs in producers.items() if v != -1 for c in cs]
            else:
                candidates = producers.get(value)
            if not candidates:
                problems.append(f"{path}: read {value} at {t0:.6f} that no change wrote")
                continue
            # Valid if some change that produced this value was not overwritten
            # by a change wholly between it and the read.
            if not any(not any(c[3] < c2[2] and c2[3] < t0 for c2 in changes if c2 is not c)
                       for c in candidates):
                history = "; ".join(f"{k} {v} [{a:.6f}, {b:.6f}] {w}" for k, v, a, b, w in ops
                                    if a < t1 + 0.002 and b > t0 - 0.02)
                problems.append(f"{path}: read {value} at [{t0:.6f}, {t1:.6f}] ({who}) is "
                                f"stale; around it: {history}")
    return problems


def test_checker_finds_a_stale_read():
    log = [["change", "/p", 17, 1.0, 2.0], ["change", "/p", 33, 3.0, 4.0],
           ["read", "/p", 17, 5.0, 6.0], ["read", "/p", 33, 5.0, 6.0],
           ["read", "/p", 17, 3.5, 6.0],          # overlaps the second change: fine
           ["change", "/q", -1, 1.0, 2.0], ["read", "/q", 0, 3.0, 4.0],
           ["read", "/q", -2, 3.0, 4.0],          # listed after its removal: stale
           ["read", "/p", -2, 5.0, 6.0], ["read", "/p", -1, 5.0, 6.0]]
    problems = find_stale_reads(log)
    assert len(problems) == 4
    assert "/p: read 17 at [5.000000" in problems[0] and "/p: read -1" in problems[1]
    assert "/q: read 0" in problems[2] and "/q: read -2" in problems[3]


def test_no_read_is_older_than_a_completed_change(cache_daemon, ceph_conf, direct_fs,
                                                  workdir):
    print(f"\nseed {SEED} (replay with LIBCEPHFSD_TEST_SEED={SEED}), {CLIENTS} clients, "
          f"{SECONDS}s")
    for d in range(2):
        direct_fs.mkdir(f"{workdir}/d{d}", 0o777)
    for i in range(FILES):
        direct_fs.close(direct_fs.open(f"{workdir}/d{i % 2}/f{i}", "w", 0o666))
    env = {**os.environ, "LIBCEPHFSD_SOCKET": cache_daemon.socket_path}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, ceph_conf, workdir, str(SEED),
                               str(n), str(SECONDS), str(FILES)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for n in range(CLIENTS)]
    entries, hits, misses, invalidations = [], 0, 0, 0
    for proc in procs:
        out, err = proc.communicate(timeout=SECONDS + 120)
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        entries += report["log"]
        hits += report["hits"]
        misses += report["misses"]
        invalidations += report["invalidations"]
    reads = sum(1 for e in entries if e[0] == "read")
    changes = sum(1 for e in entries if e[0] == "change")
    print(f"{reads} reads ({hits} cache hits, {misses} misses), {changes} changes, "
          f"{invalidations} invalidations applied")
    assert reads > 500 and changes > 100 and hits > 0 and invalidations > 0, \
        "the run must exercise the cache"
    problems = find_stale_reads(entries)
    assert not problems, f"seed {SEED}: " + "\n".join(problems[:20])
