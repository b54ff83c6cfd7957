"""The client cache's bookkeeping, with an injected clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from helpers import Clock
from libcephfs_proxy.cache import MISS, MetadataCache


@pytest.fixture
def clock():
    return Clock()


def test_hit_until_the_deadline_then_expired(clock):
    cache = MetadataCache(8, timer=clock)
    assert cache.put("k", "v", deadline=1001.0, deps=[1])
    assert cache.get("k") == "v"
    clock.now = 1000.999
    assert cache.get("k") == "v"
    clock.now = 1001.0
    assert cache.get("k") is MISS
    assert (cache.stats.hits, cache.stats.misses, cache.stats.expirations) == (2, 1, 1)
    assert len(cache) == 0 and cache._by_dep == {}


def test_an_answer_already_past_its_deadline_is_not_stored(clock):
    cache = MetadataCache(8, timer=clock)
    assert not cache.put("k", "v", deadline=999.0, deps=[])
    assert cache.get("k") is MISS and cache.stats.uncacheable == 1


def test_lru_eviction_keeps_the_recently_used(clock):
    cache = MetadataCache(3, timer=clock)
    for k in "abc":
        cache.put(k, k.upper(), 2000.0, [k])
    assert cache.get("a") == "A"           # a becomes most recent
    cache.put("d", "D", 2000.0, ["d"])     # evicts b, the least recent
    assert cache.get("b") is MISS
    assert [cache.get(k) for k in "acd"] == ["A", "C", "D"]
    assert cache.stats.evictions == 1
    assert "b" not in cache._by_dep        # the reverse index follows evictions


def test_invalidate_drops_every_dependent_entry_and_only_those(clock):
    cache = MetadataCache(16, timer=clock)
    cache.put(("stat", b"/a/f"), 1, 2000.0, [1, (1, b"a"), 10, (10, b"f"), 100])
    cache.put(("stat", b"/b/g"), 2, 2000.0, [1, (1, b"b"), 20, (20, b"g"), 100])  # hard link
    cache.put(("stat", b"/a/h"), 3, 2000.0, [1, (1, b"a"), 10, (10, b"h"), 101])
    assert cache.invalidate([100]) == 2            # the shared inode
    assert cache.get(("stat", b"/a/h")) == 3
    assert cache.invalidate([(1, b"a")]) == 1      # rename of /a
    assert len(cache) == 0 and cache._by_dep == {}
    assert cache.invalidate([12345]) == 0


def test_replacing_an_entry_reindexes_it(clock):
    cache = MetadataCache(4, timer=clock)
    cache.put("k", "old", 2000.0, [1])
    cache.put("k", "new", 2000.0, [2])
    assert cache.invalidate([1]) == 0 and cache.get("k") == "new"
    assert cache.invalidate([2]) == 1


def test_clear_forgets_everything(clock):
    cache = MetadataCache(4, timer=clock)
    for k in range(4):
        cache.put(k, k, 2000.0, [k])
    cache.clear()
    assert len(cache) == 0 and cache._by_dep == {}
    assert cache.stats.flushes == 1 and cache.stats.evictions == 0


def test_bounded_whatever_is_put(clock):
    cache = MetadataCache(50, timer=clock)
    for i in range(10_000):
        cache.put(i, i, 2000.0, [i % 7, (i, b"x")])
    assert len(cache) == 50
    assert sum(len(v) for v in cache._by_dep.values()) == 100


def test_threads_hammering_one_cache(clock):
    cache = MetadataCache(64, timer=clock)
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(3000):
                cache.put((n, i % 100), i, 2000.0, [i % 13, n])
                cache.get((n, (i * 7) % 100))
                if i % 50 == 0:
                    cache.invalidate([i % 13])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 64
    indexed = {k for keys in cache._by_dep.values() for k in keys}
    assert indexed == set(cache._store.keys())


def test_weighed_entries_count_what_they_weigh_and_an_oversized_one_is_refused(clock):
    cache = MetadataCache(10, timer=clock, weigh=len)
    assert cache.put("big", "x" * 6, 2000.0, [1])
    assert cache.put("small", "yy", 2000.0, [2])
    assert cache.put("other", "zzz", 2000.0, [3])    # 6 + 2 + 3 > 10: evicts "big"
    assert cache.get("big") is MISS and cache.stats.evictions == 1 and 1 not in cache._by_dep
    assert not cache.put("huge", "w" * 11, 2000.0, [4])
    assert cache.stats.uncacheable == 1 and cache.get("huge") is MISS
    assert [cache.get(k) for k in ("small", "other")] == ["yy", "zzz"]


def test_a_first_place_to_look_counts_no_miss(clock):
    cache = MetadataCache(4, timer=clock)
    assert cache.get("k", count_miss=False) is MISS
    cache.put("k", 1, 2000.0, [1])
    assert cache.get("k", count_miss=False) == 1
    assert (cache.stats.hits, cache.stats.misses) == (1, 0)


def test_a_listing_weighs_one_more_per_sixteen_entries():
    from libcephfs_proxy._types import Listing, cache_weight
    assert cache_weight(Listing(0, 0, ((),) * 15, True)) == 1
    assert cache_weight(Listing(0, 0, ((),) * 256, True)) == 17
    assert cache_weight("a stat answer") == 1


@pytest.mark.parametrize("wire", [None, [0, 0, [], False], [-1, 0, [], True], [0, 0, [[1]], True],
                                  [0, "x", [], True], [1, 2, 3]])
def test_a_malformed_listing_is_a_protocol_error(wire):
    from libcephfs_proxy import ProtocolError
    from libcephfs_proxy._libcephfs import _listing
    with pytest.raises(ProtocolError):
        _listing(wire)


def test_a_listing_is_made_immutable():
    from libcephfs_proxy._libcephfs import _listing
    got = _listing([0, 7, [[1, 2, 3, 4, b".", 9]], True])
    assert got == (0, 7, ((1, 2, 3, 4, b".", 9),), True) and got.eof
