"""What the measuring tools share: the dev cluster, a daemon process, memory.

Imported by ``tools/bench``, ``tools/loadtest`` and ``tools/ceph-dev-cluster``
(a script's own folder is on ``sys.path``).  Nothing here is part of the
daemon or the client library.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Where Debian's python3-cephfs puts the binding (direct libcephfs).
DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def start_cluster(*extra: str) -> str:
    """Start (or reuse) the dev cluster; returns its ceph.conf path."""
    out = subprocess.run([sys.executable, str(REPO / "tools" / "ceph-dev-cluster"), "start",
                          *extra], check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def evict(ceph_conf: str, instance_id: int) -> None:
    """Evict a CephFS client that died holding caps, so others need not wait
    for the MDS to time its session out."""
    subprocess.run(["ceph", "-c", ceph_conf, "tell", "mds.*", "client", "evict",
                    f"id={instance_id}"], check=False, capture_output=True, timeout=60)


def settle(ceph_conf: str, timeout: float = 60.0) -> float:
    """Wait until the MDS has purged what earlier work deleted (its purge
    queue empty), at most *timeout* seconds; returns the seconds waited.

    Removing a tree leaves the MDS deleting its objects for seconds after
    the removal returned, on CPUs a measurement that follows needs.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        proc = subprocess.run(["ceph", "-c", ceph_conf, "tell", "mds.*", "perf", "dump",
                               "purge_queue"], capture_output=True, text=True, timeout=60)
        try:
            queue = json.loads(proc.stdout)["purge_queue"]
            busy = queue["pq_executing"] or queue["pq_item_in_journal"]
        except (ValueError, KeyError, TypeError):
            break      # not the dev cluster's one MDS, or other counters: do not wait
        if not busy:
            break
        time.sleep(0.5)
    return time.monotonic() - t0


#: Ceph's own latency counters the benchmarks report: (name, daemons, perf section, counter).
CLUSTER_COUNTERS = (("osd_read", "osd.*", "osd", "op_r_latency"),
                    ("osd_write", "osd.*", "osd", "op_w_latency"),
                    ("mds_request", "mds.*", "mds", "reply_latency"))


def cluster_counters(ceph_conf: str) -> dict[str, tuple[int, float]] | None:
    """(operations, seconds in them) so far of each of CLUSTER_COUNTERS, or
    None when they cannot be read: no ``ceph`` command, no answer, or more
    than one daemon of a kind (``ceph tell`` then prefixes each answer).

    On a cluster sharing the machine with its clients, what the clients
    cost the machine shows up here as Ceph's own latency.
    """
    sections: dict[tuple[str, str], dict] = {}
    counters: dict[str, tuple[int, float]] = {}
    try:
        for name, daemons, section, counter in CLUSTER_COUNTERS:
            if (daemons, section) not in sections:
                proc = subprocess.run(["ceph", "-c", ceph_conf, "tell", daemons, "perf", "dump",
                                       section], capture_output=True, text=True, timeout=60)
                sections[daemons, section] = json.loads(proc.stdout)[section]
            value = sections[daemons, section][counter]
            counters[name] = (int(value["avgcount"]), float(value["sum"]))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None
    return counters


def counters_delta(before: dict | None, after: dict | None, seconds: float) -> dict | None:
    """What the cluster did between two cluster_counters(): per counter,
    operations per second and their mean latency in milliseconds."""
    if not before or not after or seconds <= 0:
        return None
    delta = {}
    for name in after:
        ops = after[name][0] - before[name][0]
        spent = after[name][1] - before[name][1]
        delta[name] = {"ops_per_s": round(ops / seconds, 1),
                       "mean_ms": round(1000 * spent / ops, 2) if ops > 0 else None}
    return delta


def ceph_daemons(ceph_conf: str) -> dict[int, str]:
    """The Ceph daemons on this machine started with *ceph_conf*: pid -> program.

    By command line (``ceph-mds ... -c <conf>``), as ``tools/ceph-dev-cluster``
    starts them: an MDS that respawns gets a new pid.
    """
    found = {}
    conf = os.fsencode(ceph_conf)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        program = argv[0].rsplit(b"/", 1)[-1]
        if program.startswith(b"ceph-") and conf in argv:
            found[int(entry)] = program.decode()
    return found


class PlacementError(Exception):
    """--cluster-cpus cannot be honoured (the message says why)."""


class ClusterPinning:
    """The dev cluster's daemons on *cluster_cpus*, this process on the rest.

    Every thread of every Ceph daemon started with *ceph_conf* gets the
    affinity *cluster_cpus*; this process gets the CPUs it may use minus
    those, which everything it starts afterwards (workers, libcephfsd)
    inherits.  On a real client host the cluster runs on other machines: its
    CPU is not the clients' to share, and here it would be otherwise.
    ``undo()`` gives every thread back the affinity it had (a thread or
    daemon born meanwhile: its process's, or this process's old one).
    """

    def __init__(self, ceph_conf: str, cluster_cpus: Iterable[int]):
        self.ceph_conf = ceph_conf
        self.own = frozenset(os.sched_getaffinity(0))
        self.cluster = frozenset(cluster_cpus)
        if not self.cluster:
            raise PlacementError("--cluster-cpus names no CPU")
        if not self.cluster <= self.own:
            raise PlacementError(f"--cluster-cpus {cpu_list(self.cluster)}: this process "
                                 f"may only use CPUs {cpu_list(self.own)}")
        self.clients = self.own - self.cluster
        if not self.clients:
            raise PlacementError(f"--cluster-cpus {cpu_list(self.cluster)} leaves no CPU for "
                                 f"the clients (this process may use {cpu_list(self.own)})")
        daemons = ceph_daemons(ceph_conf)
        if not daemons:
            raise PlacementError(f"no Ceph daemon started with {ceph_conf} runs on this "
                                 "machine: nothing to pin")
        #: (pid, tid) -> affinity before; pid -> its main thread's.
        self.saved: dict[tuple[int, int], frozenset[int]] = {}
        self.process: dict[int, frozenset[int]] = {}
        self.programs = sorted(set(daemons.values()))
        # Twice: a thread created during the first pass by a thread not yet
        # pinned has the old affinity.
        for _ in range(2):
            for pid in daemons:
                for tid in _tasks(pid):
                    try:
                        before = frozenset(os.sched_getaffinity(tid))
                        os.sched_setaffinity(tid, self.cluster)
                    except OSError:         # the thread ended meanwhile
                        continue
                    self.saved.setdefault((pid, tid), before)
                    if tid == pid:
                        self.process.setdefault(pid, before)
        os.sched_setaffinity(0, self.clients)

    def as_json(self) -> dict:
        return {"cluster_cpus": sorted(self.cluster), "client_cpus": sorted(self.clients),
                "cluster_daemons": self.programs}

    def undo(self) -> None:
        os.sched_setaffinity(0, self.own)
        for pid in ceph_daemons(self.ceph_conf):
            default = self.process.get(pid, self.own)
            for tid in _tasks(pid):
                try:
                    os.sched_setaffinity(tid, self.saved.get((pid, tid), default))
                except OSError:
                    continue


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


class DaemonDidNotStart(SystemExit):
    """The daemon exited or did not listen within 30 s (exits a tool that does
    not catch it, with the message)."""


class DaemonProcess:
    """A libcephfsd on a private socket, its log in a temporary directory.

    ``new_session``: in a session of its own, so that a Ctrl-C at the
    terminal reaches only the tool, which can then stop its clients cleanly
    before it stops the daemon.
    """

    def __init__(self, *extra: str, log_level: str = "warning", new_session: bool = False):
        self.dir = tempfile.mkdtemp(prefix="libcephfsd-tool-")
        self.socket = os.path.join(self.dir, "d.sock")
        self.log_path = os.path.join(self.dir, "d.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "libcephfsd", "--socket", self.socket,
                                      "--log-level", log_level, *extra],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=new_session)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DaemonDidNotStart(f"libcephfsd did not start: see {self.log_path}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"<DaemonProcess pid={self.proc.pid} {self.socket}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _proc_kib(path: str, key: str) -> int:
    """The KiB figure of the line starting with *key* in a /proc file (0 once gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident set size of *pid* in KiB (0 once it is gone)."""
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional set size of *pid* in KiB: shared pages split among their
    users, so a sum over processes counts a shared library once."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def mem_available_kib() -> int:
    """The kernel's estimate of memory available without swapping, in KiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def parse_size(text: str) -> int:
    """'16MiB', '64k', '4G', '4096' -> bytes (binary units)."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    num = t.rstrip("kmgt")
    return int(float(num) * units[t[len(num):]])
