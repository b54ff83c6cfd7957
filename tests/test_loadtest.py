"""tools/loadtest: small real runs of every mode, its failures, a sweep.

The tool is run as a program against the session's dev cluster; the read
verification is also checked in-process against an in-memory filesystem,
where a corrupted or stale file can be made on purpose.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys

import pytest

from helpers import REPO

TOOL = REPO / "tools" / "loadtest"
KIB = 1024


def loadtest(ceph_conf: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--conf", ceph_conf, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def run_json(ceph_conf: str, *args: str) -> dict:
    p = loadtest(ceph_conf, *args, "--json")
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout)


def assert_clean(r: dict, connections: int, file_size: int) -> None:
    assert r["ok"] and r["failures"] == [], r["failures"]
    assert r["errors"]["total"] == 0 and r["mismatches"]["count"] == 0
    c = r["connections"]
    assert c["reached"] == c["simultaneous"] == c["requested"] == connections
    assert c["setup_errors"] == 0 and c["stop_reason"] is None
    for op in ("write", "read", "delete"):
        assert r["ops"][op]["count"] > 0, op
    # Every counted read was verified, and whole files moved.
    assert r["reads_verified"] == r["ops"]["read"]["count"]
    for op in ("write", "read"):
        assert r["ops"][op]["bytes"] == r["ops"][op]["count"] * file_size
        assert r["ops"][op]["mb_per_s"] > 0
        assert 0 < r["ops"][op]["p50_ms"] <= r["ops"][op]["p99_ms"] <= r["ops"][op]["max_ms"]
    clients = r["memory"]["clients"]["rss"]
    assert clients["baseline_kib"] > 0 and clients["peak_kib"] >= clients["up_kib"] > 0
    assert clients["per_connection_peak_kib"] is not None
    assert r["memory"]["samples"] > 0


@pytest.mark.parametrize("mode", ["proxy", "proxy-cache"])
def test_proxy_modes(ceph_conf: str, mode: str):
    r = run_json(ceph_conf, "--mode", mode, "--connections", "4", "--processes", "2",
                 "--file-size", "256KiB", "--duration", "3")
    assert_clean(r, 4, 256 * KIB)
    assert r["spread"] == {"processes": 2, "threads_per_process": [2, 2]}
    daemon = r["memory"]["daemon"]["rss"]
    assert 0 < daemon["baseline_kib"] < daemon["peak_kib"]
    assert daemon["per_connection_peak_kib"] > 0
    assert r["connections"]["client_cache"] == (4 if mode == "proxy-cache" else 0)


def test_direct_mode(ceph_conf: str):
    r = run_json(ceph_conf, "--mode", "direct", "--connections", "2", "--file-size", "256KiB",
                 "--duration", "2")
    assert_clean(r, 2, 256 * KIB)
    assert r["memory"]["daemon"] is None
    assert r["spread"] == {"processes": 1, "threads_per_process": [2]}


def test_connections_that_cannot_be_set_up_fail_the_run(ceph_conf: str):
    p = loadtest(ceph_conf, "--mode", "proxy", "--socket", "/nonexistent/sock",
                 "--connections", "2", "--file-size", "64KiB", "--duration", "1")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "2 connection(s) could not be set up" in p.stdout
    assert "DaemonUnavailable" in p.stdout and "FAILED" in p.stdout


def test_data_that_cannot_fit_is_refused(ceph_conf: str):
    p = loadtest(ceph_conf, "--mode", "direct", "--connections", "64", "--file-size", "1GiB",
                 "--duration", "1")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "does not fit" in p.stderr
    assert "--connections" in p.stderr and "--file-size" in p.stderr and "--osd-size" in p.stderr


def test_memory_wall_is_a_result_for_direct_and_a_failure_for_proxy(ceph_conf: str):
    # A reserve no machine has: the guard stops growth before the first connection.
    args = ("--connections", "2", "--file-size", "64KiB", "--duration", "1",
            "--memory-reserve", "100TiB", "--json")
    direct = loadtest(ceph_conf, "--mode", "direct", *args)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    c = json.loads(direct.stdout)["connections"]
    assert c["reached"] == 0 and c["requested"] == 2
    assert c["stop_reason"].startswith("MemAvailable") and "reserve" in c["stop_reason"]
    proxy = loadtest(ceph_conf, "--mode", "proxy", *args)
    assert proxy.returncode == 1
    r = json.loads(proxy.stdout)
    assert any("reached 0 of 2" in f for f in r["failures"]), r["failures"]


def test_sweep_table_and_plot(ceph_conf: str, tmp_path):
    png = tmp_path / "sweep.png"
    doc = run_json(ceph_conf, "--sweep", "1,2", "--modes", "direct,proxy", "--file-size",
                   "128KiB", "--duration", "1", "--plot", str(png))
    assert [(r["mode"], r["connections"]["reached"]) for r in doc["sweep"]] == [
        ("direct", 1), ("direct", 2), ("proxy", 1), ("proxy", 2)]
    assert all(r["ok"] and r["ops"]["total"]["count"] > 0 for r in doc["sweep"])
    assert doc["plot"] == str(png)
    per = doc["memory_per_connection"]
    direct_costs = [r["memory"]["clients"]["rss"]["per_connection_peak_kib"]
                    for r in doc["sweep"] if r["mode"] == "direct"]
    assert per["direct_instance_kib"] == pytest.approx(sorted(direct_costs)[0] / 2
                                                       + sorted(direct_costs)[1] / 2, abs=0.1)
    assert (per["proxy"]["from"], per["proxy"]["to"]) == (1, 2)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


# -- the read verification, in-process -------------------------------------------


def load_tool():
    loader = importlib.machinery.SourceFileLoader("loadtest_tool", str(TOOL))
    spec = importlib.util.spec_from_loader("loadtest_tool", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # dataclasses look their module up there
    sys.path.insert(0, str(TOOL.parent))
    try:
        loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOL.parent))
    return module


class MemoryFS:
    """The calls a connection makes, on files kept in a dict."""

    def __init__(self):
        self.files: dict[str, bytearray] = {}
        self.fds: dict[int, str] = {}

    def open(self, path, flags, mode):
        if flags == "w":
            self.files[path] = bytearray()
        self.fds[len(self.fds) + 3] = path
        return len(self.fds) + 2

    def write(self, fd, data, offset):
        f = self.files[self.fds[fd]]
        f[offset:offset + len(data)] = data
        return len(data)

    def read(self, fd, offset, length):
        return bytes(self.files[self.fds[fd]][offset:offset + length])

    def close(self, fd):
        del self.fds[fd]

    def unlink(self, path):
        del self.files[path]


def test_reads_catch_corrupt_short_and_stale_files():
    tool = load_tool()
    size = tool.CHUNK + 3 * KIB + 5        # two chunks, the last not block-aligned
    fs = MemoryFS()
    conn = tool.Conn(7, fs, "/d", tool.Content(size), size)
    conn.rng.randrange = lambda n: 0        # every write goes to slot 0
    conn.op_write()
    first = bytes(fs.files["/d/f0"])
    conn.op_write()
    assert conn.op_read() == size and conn.verified == 1
    assert first != fs.files["/d/f0"]       # each write has its own content

    def read_fails_after(change) -> str:
        good, known = bytes(fs.files["/d/f0"]), dict(conn.known)
        change(fs.files["/d/f0"])
        with pytest.raises(tool.Mismatch) as info:
            conn.op_read()
        assert not conn.known           # a bad file is reported once, then not read again
        fs.files["/d/f0"][:] = good
        conn.known.update(known)
        return str(info.value)

    def flip(f):
        f[size // 2] ^= 1

    def stale_block(f):                     # one 4 KiB block left from the first write
        f[8 * KIB:12 * KIB] = first[8 * KIB:12 * KIB]

    assert "c7 /d/f0" in read_fails_after(flip)
    assert f"read {size - 1} bytes" in read_fails_after(lambda f: f.pop())
    assert read_fails_after(stale_block)
    assert "write #1" in read_fails_after(lambda f: f.__setitem__(slice(None), first))
    assert conn.op_read() == size and conn.verified == 2
