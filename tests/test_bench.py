"""tools/bench micro and mix run end to end and report what they promise.

Short runs against the real cluster; they check the report's shape and
arithmetic (every cell has ops, ratios are variant / direct), never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "tools"))
import _harness  # noqa: E402 - the tools' own module, from their folder

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


def test_seqread_64m_is_opt_in_and_reads_64_mib_per_op(ceph_conf: str, direct_fs) -> None:
    result = run_bench("micro", "--only", "seqread-64m", "--clients", "1", "--duration", "0.3")
    check_suite(result, {"seqread-64m"}, [1], direct_fs)
    (row,) = result["results"]
    for cell in row["variants"].values():
        assert cell["bytes"] == cell["ops"] * (64 << 20)
    # Named in the help, but not in the default set.
    text = subprocess.run([sys.executable, str(BENCH), "micro", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert "seqread-64m" in text
    default = text.split("(the default)")[0]
    assert "seqwrite-16m" in default and "seqread-64m" not in default


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


def _cluster_affinities(conf: str) -> dict[tuple[int, int], str]:
    """(pid, tid) -> Cpus_allowed_list of every thread of the cluster's daemons."""
    out = {}
    for pid in _harness.ceph_daemons(conf):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    line = next(x for x in f if x.startswith("Cpus_allowed_list:"))
            except (OSError, StopIteration):
                continue
            out[pid, int(tid)] = line.split()[1]
    return out


def test_cluster_cpus_pins_the_cluster_for_the_run_and_puts_it_back(ceph_conf: str) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("pinning needs a machine with two CPUs or more")
    before = _cluster_affinities(ceph_conf)
    assert before, "no Ceph daemon of the dev cluster found"
    proc = subprocess.Popen([sys.executable, str(BENCH), "micro", "--only", "stat",
                             "--clients", "1", "--duration", "1", "--variants", "direct,daemon",
                             "--cluster-cpus", str(cpus[0]), "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        seen.update(_cluster_affinities(ceph_conf).values())
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    # During the run, the daemons' threads were on the one CPU asked for.
    assert str(cpus[0]) in seen
    result = json.loads(out)
    assert result["placement"]["cluster_cpus"] == [cpus[0]]
    assert result["placement"]["client_cpus"] == cpus[1:]
    assert "ceph-mds" in result["placement"]["cluster_daemons"]
    # Afterwards every thread that was there is back where it was.
    after = _cluster_affinities(ceph_conf)
    assert {k: after[k] for k in before if k in after} == \
        {k: before[k] for k in before if k in after}


@pytest.mark.parametrize("cpus, message", [
    ("999", "may only use CPUs"),
    ("x", "a comma-separated list of CPU numbers"),
])
def test_cluster_cpus_refuses_what_it_cannot_do(ceph_conf: str, cpus: str, message: str) -> None:
    before = _cluster_affinities(ceph_conf)
    proc = subprocess.run([sys.executable, str(BENCH), "micro", "--only", "stat",
                           "--cluster-cpus", cpus], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert _cluster_affinities(ceph_conf) == before


def test_cluster_cpus_leaves_the_clients_a_cpu(ceph_conf: str) -> None:
    every = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    proc = subprocess.run([sys.executable, str(BENCH), "mix", "--cluster-cpus", every],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "leaves no CPU for the clients" in proc.stderr
