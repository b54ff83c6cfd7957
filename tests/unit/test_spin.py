"""SpinPoll: polling for a message before sleeping, and backing off."""

from __future__ import annotations

import socket
import threading

import pytest

from libcephfsd.protocol import DATA_CEILING, Request, Op
from libcephfsd.transport import SocketTransport, SpinPoll


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
