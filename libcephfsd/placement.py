"""Which CPUs the daemon's threads run on.

Each connection has a thread that runs Python, and CPython runs one thread
at a time: a thread lets go of the GIL around every call into libcephfs and
every blocking socket call, and takes it back after.  With many busy
clients, most of those hand-offs go to a thread that sleeps, and when that
thread last ran on the other CPU, waking it is a cross-CPU wake-up: tens of
microseconds on VMs.  Measured on the 2-vCPU dev VM, 16 clients each
calling ``stat`` in a loop: the daemon spent 72% of its CPU time in the
kernel switching threads (``finish_task_switch``, futexes), ~90 us per call;
with its Python threads on one CPU, 24 us per call and 1.6x the calls.

Python cannot use more than one CPU at a time anyway, so the threads that
run it are kept together on one CPU.  libcephfs's own threads (messengers,
finishers), which never need the GIL, keep every CPU the daemon may use:
threads that create them (mount and the other configuration calls) are
released first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)


class Placement:
    """Pins the calling thread where it belongs.  Immutable; any thread.

    *python_cpu* None leaves every thread to the scheduler.
    """

    def __init__(self, python_cpu: int | None, allowed: Iterable[int] | None = None):
        #: The CPUs the daemon may use (its affinity when it started).
        self.allowed = frozenset(os.sched_getaffinity(0) if allowed is None else allowed)
        if python_cpu is not None and python_cpu not in self.allowed:
            raise ValueError(f"CPU {python_cpu} is not one this process may use "
                             f"({_cpu_list(self.allowed)})")
        #: Where threads that run Python go; None: anywhere in ``allowed``.
        self.python_cpu = python_cpu

    @classmethod
    def choose(cls, spec: str, allowed: Iterable[int] | None = None) -> Placement:
        """From ``--python-cpu``: 'auto' (the last CPU the process may use,
        when it may use more than one), 'any', or a CPU number.  Raises
        ValueError for anything else or a CPU the process may not use."""
        cpus = frozenset(os.sched_getaffinity(0) if allowed is None else allowed)
        spec = spec.strip().lower()
        if spec == "any":
            return cls(None, cpus)
        if spec == "auto":
            return cls(max(cpus) if len(cpus) > 1 else None, cpus)
        try:
            cpu = int(spec)
        except ValueError:
            raise ValueError(f"not auto, any or a CPU number: {spec!r}") from None
        return cls(cpu, cpus)

    def __repr__(self) -> str:
        where = "any" if self.python_cpu is None else f"cpu {self.python_cpu}"
        return f"<Placement python={where} allowed={_cpu_list(self.allowed)}>"

    def describe(self) -> dict:
        return {"python_cpu": self.python_cpu, "allowed": sorted(self.allowed)}

    def python_thread(self) -> None:
        """Call first in a thread that will run the daemon's Python (a connection's)."""
        if self.python_cpu is not None:
            self._set({self.python_cpu})

    def free_thread(self) -> None:
        """Call first in a thread that may create libcephfs's threads (they inherit it)."""
        if self.python_cpu is not None:
            self._set(self.allowed)

    @staticmethod
    def _set(cpus: set[int] | frozenset[int]) -> None:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:  # a CPU went offline, a cpuset changed: run anywhere
            log.warning("cannot move a thread to CPUs %s: %s", _cpu_list(cpus), exc)


def _cpu_list(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
