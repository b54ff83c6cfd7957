"""Placement.choose: which CPU the daemon's Python threads go to."""

from __future__ import annotations

import os
import threading

import pytest

from libcephfsd.placement import Placement


@pytest.mark.parametrize("spec, allowed, cpu", [
    ("auto", {0, 1}, 1),            # the last CPU the daemon may use
    ("auto", {2, 5, 7}, 7),
    ("auto", {3}, None),            # one CPU: nothing to choose
    ("any", {0, 1}, None),
    (" 5 ", {2, 5, 7}, 5),
])
def test_choose(spec, allowed, cpu):
    placement = Placement.choose(spec, allowed)
    assert placement.python_cpu == cpu
    assert placement.allowed == allowed


@pytest.mark.parametrize("spec", ["4", "-1", "one", ""])
def test_choose_refuses_what_cannot_be_used(spec):
    with pytest.raises(ValueError):
        Placement.choose(spec, {0, 1, 2})


def test_threads_are_moved_and_released():
    cpus = os.sched_getaffinity(0)
    placement = Placement(min(cpus), cpus)
    seen = {}

    def run() -> None:
        placement.python_thread()
        seen["pinned"] = os.sched_getaffinity(0)
        placement.free_thread()
        seen["freed"] = os.sched_getaffinity(0)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"pinned": {min(cpus)}, "freed": cpus}
    assert os.sched_getaffinity(0) == cpus        # only the calling thread moved
