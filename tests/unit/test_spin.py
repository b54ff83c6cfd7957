"""SpinPoll: polling for a message before sleeping, and backing off."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from libcephfsd.protocol import DATA_CEILING, Request, Op
from libcephfs_proxy._connection import spin_budget_us
from libcephfsd.cli import parse_args
from libcephfsd.transport import SPIN_DEFAULT_US, SocketTransport, SpinPoll, default_spin_us


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_poll_finds_waiting_bytes(pair):
    a, b = pair
    spin = SpinPoll(1000, threading.Lock())
    a.send(b"hello")
    buf = bytearray(16)
    assert spin.poll(b, memoryview(buf)) == 5
    assert bytes(buf[:5]) == b"hello" and (spin.hits, spin.misses) == (1, 0)


def test_misses_in_a_row_back_off_exponentially_and_a_hit_resets(pair):
    a, b = pair
    spin = SpinPoll(50, threading.Lock())
    view = memoryview(bytearray(16))
    polled = []
    for _ in range(1 + 1 + 1 + 1 + 3 + 1 + 7):
        before = spin.misses
        assert spin.poll(b, view) == -1
        polled.append(spin.misses > before)
    # The first miss costs no skip; then skips of 1, 3 and 7 receives.
    assert polled == [True, True, False, True, False, False, False, True] + [False] * 7
    assert spin.poll(b, view) == -1 and spin.misses == 5      # the 7 skips are over
    for _ in range(31):
        spin.poll(b, view)
    a.send(b"x")
    while spin.poll(b, view) == -1:     # skipped receives say -1 without reading
        pass
    assert spin.hits == 1
    a.send(b"y")
    assert spin.poll(b, view) == 1       # no skip after a hit


def test_one_miss_between_hits_costs_no_skip(pair):
    a, b = pair
    spin = SpinPoll(50, threading.Lock())
    view = memoryview(bytearray(16))
    for _ in range(5):
        assert spin.poll(b, view) == -1          # a slow call: one miss
        a.send(b"z")
        assert spin.poll(b, view) == 1           # the next fast one still polls
    assert (spin.hits, spin.misses) == (5, 5)


def test_no_poll_when_not_allowed_or_another_thread_polls(pair):
    a, b = pair
    a.send(b"data")
    view = memoryview(bytearray(16))
    assert SpinPoll(1000, threading.Lock(), lambda: False).poll(b, view) == -1
    gate = threading.Lock()
    with gate:
        assert SpinPoll(1000, gate).poll(b, view) == -1
    assert SpinPoll(1000, gate).poll(b, view) == 4      # the data was left for it


def test_transport_with_spin_receives_whole_messages(pair):
    a, b = pair
    ta = SocketTransport(a, DATA_CEILING, DATA_CEILING)
    tb = SocketTransport(b, DATA_CEILING, DATA_CEILING)
    tb.spin = SpinPoll(200, threading.Lock())
    for i in range(1, 200):
        ta.send(Request(i, Op.PING, [], b"z" * (i * 97)))
        got = tb.receive()
        assert got.id == i and got.data == b"z" * (i * 97)
    # A sender that starts late: the receiver sleeps in the kernel instead.
    t = threading.Timer(0.05, lambda: ta.send(Request(500, Op.PING, [], b"")))
    t.start()
    assert tb.receive().id == 500
    t.join()
    assert tb.spin.hits + tb.spin.misses > 0


def test_stretch_extends_the_budget_for_a_slow_answer(pair):
    a, b = pair
    view = memoryview(bytearray(16))
    timer = threading.Timer(0.05, a.send, args=(b"late",))
    spin = SpinPoll(1000, threading.Lock())             # 1 ms: misses a reply 50 ms away
    timer.start()
    assert spin.poll(b, view) == -1
    timer.join()
    assert b.recv(16) == b"late"
    spin = SpinPoll(1000, threading.Lock())
    spin.stretch = 2.0                                  # expecting a slow answer
    timer = threading.Timer(0.05, a.send, args=(b"late",))
    timer.start()
    assert spin.poll(b, view) == 4 and spin.hits == 1
    timer.join()


def test_default_polls_only_with_a_second_cpu():
    assert default_spin_us({0}) == 0
    assert default_spin_us({3}) == 0
    assert default_spin_us({0, 1}) == SPIN_DEFAULT_US > 0
    own = os.sched_getaffinity(0)
    assert default_spin_us() == (SPIN_DEFAULT_US if len(own) > 1 else 0)


@pytest.mark.parametrize("environ, cpus, expected", [
    ({}, {0, 1}, SPIN_DEFAULT_US),
    ({}, {1}, 0.0),                                     # pinned: never poll by default
    ({"LIBCEPHFS_PROXY_SPIN_US": ""}, {1}, 0.0),
    ({"LIBCEPHFS_PROXY_SPIN_US": "junk"}, {0, 1}, SPIN_DEFAULT_US),
    ({"LIBCEPHFS_PROXY_SPIN_US": "250"}, {1}, 250.0),   # asked for: honoured even pinned
    ({"LIBCEPHFS_PROXY_SPIN_US": "0"}, {0, 1}, 0.0),
    ({"LIBCEPHFS_PROXY_SPIN_US": "99999"}, {0, 1}, 10000.0),
    ({"LIBCEPHFS_PROXY_SPIN_US": "-5"}, {0, 1}, 0.0),
])
def test_client_budget(environ, cpus, expected):
    assert spin_budget_us(environ, cpus) == expected


def test_daemon_option_defaults_to_the_cpu_rule():
    assert parse_args([]).spin_us is None
    assert parse_args(["--spin-us", "0"]).spin_us == 0
