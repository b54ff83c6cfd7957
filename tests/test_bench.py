"""tools/bench micro and mix run end to end and report what they promise.

Short runs against the real cluster; they check the report's shape and
arithmetic (every cell has ops, ratios are variant / direct), never speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

BENCH = REPO / "tools" / "bench"
VARIANTS = ("direct", "daemon", "cache")


def run_bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH), *args, "--json"], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"tools/bench {' '.join(args)} failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


def check_suite(result: dict, benches: set[str], clients: list[int], direct_fs) -> None:
    from libcephfsd.backend import cephfs

    assert result["variants"] == list(VARIANTS)
    cells = {(r["benchmark"], r["clients"]): r for r in result["results"]}
    assert set(cells) == {(b, n) for b in benches for n in clients}
    for (bench, n), row in cells.items():
        assert list(row["variants"]) == list(VARIANTS)
        direct = row["variants"]["direct"]
        for variant, cell in row["variants"].items():
            where = f"{bench} x {variant} x {n} clients"
            assert cell["ops"] > 0, where
            assert len(cell["per_worker_ops"]) == n and min(cell["per_worker_ops"]) > 0, where
            metric = cell["metric"]
            assert metric == ("mib_per_s" if bench.startswith("seq") else "ops_per_s")
            assert cell[metric] > 0, where
            assert cell["ratio_to_direct"] == pytest.approx(cell[metric] / direct[metric],
                                                            rel=0.01, abs=0.002), where
            assert cell["p50_us"] <= cell["p99_us"], where
            # Only the cache variant's clients have a cache to report on.
            assert ("cache" in cell) == (variant == "cache"), where
    # The run's directory on CephFS is gone.
    with pytest.raises(cephfs.ObjectNotFound):
        direct_fs.stat(result["root"])


def test_micro(ceph_conf: str, direct_fs) -> None:
    result = run_bench("micro", "--only", "stat,create,seqwrite-16m", "--clients", "1,2",
                       "--duration", "0.5")
    check_suite(result, {"stat", "create", "seqwrite-16m"}, [1, 2], direct_fs)
    seq = next(r for r in result["results"] if r["benchmark"] == "seqwrite-16m")
    for cell in seq["variants"].values():
        assert cell["bytes"] == cell["ops"] * (16 << 20)
        # The dev cluster's one OSD counted the writes (fsynced in every op).
        writes = cell["cluster"]["osd_write"]
        assert writes["ops_per_s"] > 0 and writes["mean_ms"] > 0
    create = next(r for r in result["results"] if r["benchmark"] == "create")
    for cell in create["variants"].values():
        assert cell["cluster"]["mds_request"]["ops_per_s"] > 0    # creates and unlinks


def test_mix(ceph_conf: str, direct_fs) -> None:
    result = run_bench("mix", "--clients", "2", "--duration", "1")
    check_suite(result, {"mix"}, [2], direct_fs)
    for cell in result["results"][0]["variants"].values():
        kinds = cell["kinds"]
        assert sum(k["ops"] for k in kinds.values()) == cell["ops"]
        # Stat-like ops dominate, as in a build (weights 35+20+10+8 of 100).
        stat_like = sum(kinds[k]["ops"] for k in ("stat", "lstat", "statx", "stat-missing"))
        assert stat_like > cell["ops"] / 2


def test_repeat(ceph_conf: str, direct_fs) -> None:
    result = run_bench("micro", "--only", "stat", "--clients", "1", "--duration", "0.3",
                       "--variants", "direct,cache", "--repeat", "3")
    assert result["repeat"] == 3
    (row,) = result["results"]
    direct, cache = row["variants"]["direct"], row["variants"]["cache"]
    for cell in (direct, cache):
        assert len(cell["repeats"]) == 3 and min(cell["repeats"]) > 0
        # The cell is the median run.
        assert cell["ops_per_s"] == sorted(cell["repeats"])[1]
    ratios = sorted(c / d for c, d in zip(cache["repeats"], direct["repeats"]))
    assert cache["ratio_to_direct"] == pytest.approx(ratios[1], abs=0.002)
    assert cache["ratio_range"] == pytest.approx([ratios[0], ratios[2]], abs=0.002)


def test_shared_variant_runs_every_worker_as_a_thread_of_one_mount(ceph_conf: str,
                                                                    direct_fs) -> None:
    from libcephfsd.backend import cephfs

    result = run_bench("micro", "--only", "stat,create", "--clients", "3", "--duration", "0.5",
                       "--variants", "direct,shared")
    assert result["variants"] == ["direct", "shared"]
    for row in result["results"]:
        cell = row["variants"]["shared"]
        # One result per thread, each of which did work.
        assert len(cell["per_worker_ops"]) == 3 and min(cell["per_worker_ops"]) > 0
        assert cell["ratio_to_direct"] > 0 and "cache" not in cell
    with pytest.raises(cephfs.ObjectNotFound):
        direct_fs.stat(result["root"])
