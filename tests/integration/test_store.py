"""The Redis store's Lua scripts on the real Redis: compare-and-set, histograms, expiry, erase."""

from __future__ import annotations

import uuid

import pytest

from streamproc.state.erasure import erasure_token
from streamproc.state.keys import (
    HISTOGRAMS,
    customer_key,
    erased_key,
    histogram_key,
    latest_decisions_key,
    timer_index_key,
    timer_watermark_key,
)
from streamproc.state.store import RedisStore, Write

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(test_redis):
    # Histograms are global keys: give this test an empty database of its own (db 15 is the
    # integration tests' one; its histogram keys are deleted before and after).
    await test_redis.delete(*(histogram_key(h) for h in HISTOGRAMS))
    s = RedisStore(test_redis)
    yield s
    await test_redis.delete(*(histogram_key(h) for h in HISTOGRAMS))


def cid() -> str:
    return f"store-{uuid.uuid4().hex[:8]}"


async def test_compare_and_set_refuses_a_stale_version(store):
    a = cid()
    assert await store.save([Write(a, 0, b'{"n":1}', b"[]")]) == []
    assert await store.save([Write(a, 0, b'{"n":2}', b"[]")]) == [a]  # someone else won
    loaded = (await store.load([a]))[a]
    assert (loaded.version, loaded.doc) == (1, b'{"n":1}')
    assert await store.save([Write(a, 1, b'{"n":2}', b'["x"]')]) == []
    loaded = (await store.load([a]))[a]
    assert (loaded.version, loaded.doc, loaded.outbox) == (2, b'{"n":2}', b'["x"]')
    assert await store.read_doc(a) == loaded.doc  # the API's one-command read
    assert await store.read_doc(cid()) is None


async def test_histograms_move_with_the_customer_and_erase_takes_it_out(store, test_redis):
    a, b = cid(), cid()
    await store.save([Write(a, 0, b"{}", b"[]", ("100", "0", "5")),
                      Write(b, 0, b"{}", b"[]", ("100", "0", "7"))])
    assert await store.histograms() == {"last_purchase_day": {"100": 2}, "frequency": {"0": 2},
                                        "monetary": {"5": 1, "7": 1}}
    await store.save([Write(a, 1, b"{}", b"[]", ("103", "1", "5"))])
    await store.save([Write(a, 2, b"{}", b"[]", ("103", "1", "5"))])  # same buckets: no-op
    assert await store.histograms() == {"last_purchase_day": {"100": 1, "103": 1},
                                        "frequency": {"0": 1, "1": 1},
                                        "monetary": {"5": 1, "7": 1}}
    assert await store.erase(a) == 1
    assert await store.histograms() == {"last_purchase_day": {"100": 1}, "frequency": {"0": 1},
                                        "monetary": {"7": 1}}
    assert await test_redis.exists(customer_key(a)) == 0
    assert await store.erase(a) == 0  # twice is harmless and counts nothing twice
    assert (await store.histograms())["monetary"] == {"7": 1}


async def test_latest_decisions_are_written_with_the_state_and_only_then(store, test_redis):
    a = cid()
    latest = latest_decisions_key(a)
    hero, drawer = (b'{"slot":"hero","n":1}', b'{"slot":"drawer"}')
    assert await store.save([Write(a, 0, b"{}", b"[]", latest=(("hero", hero),),
                                   latest_ttl_ms=3_600_000)]) == []
    assert await test_redis.hgetall(latest) == {b"hero": hero}
    assert 3_500_000 < await test_redis.pttl(latest) <= 3_600_000
    # A write that loses its compare-and-set writes no decision either.
    assert await store.save([Write(a, 0, b"{}", b"[]", latest=(("hero", b"{}"),),
                                   latest_ttl_ms=9_000_000)]) == [a]
    assert await test_redis.hgetall(latest) == {b"hero": hero}
    assert await test_redis.pttl(latest) <= 3_600_000
    # A shorter-lived decision does not shorten the key's life; a longer one lengthens it.
    await store.save([Write(a, 1, b"{}", b"[]", latest=(("drawer", drawer),),
                            latest_ttl_ms=60_000)])
    assert await test_redis.hgetall(latest) == {b"hero": hero, b"drawer": drawer}
    assert await test_redis.pttl(latest) > 3_000_000
    await store.save([Write(a, 2, b"{}", b"[]", latest=(("hero", b'{"slot":"hero","n":2}'),),
                            latest_ttl_ms=7_200_000)])
    assert 7_100_000 < await test_redis.pttl(latest) <= 7_200_000
    assert (await test_redis.hget(latest, "hero")) == b'{"slot":"hero","n":2}'
    # No decision: the key is left as it is.
    await store.save([Write(a, 3, b"{}", b"[]")])
    assert await test_redis.hlen(latest) == 2
    assert await store.erase(a) == 2
    assert await test_redis.exists(latest) == 0


async def test_inactive_customers_expire_when_a_ttl_is_set(store, test_redis):
    a, b = cid(), cid()
    await store.save([Write(a, 0, b"{}", b"[]", ttl_ms=3_600_000), Write(b, 0, b"{}", b"[]")])
    assert 3_500_000 < await test_redis.pttl(customer_key(a)) <= 3_600_000
    assert await test_redis.pttl(customer_key(b)) == -1  # no ttl: kept


async def test_a_lost_script_cache_is_reloaded(store, test_redis):
    await test_redis.script_flush()
    a = cid()
    assert await store.save([Write(a, 0, b"{}", b"[]")]) == []
    assert (await store.load([a]))[a].version == 1
    app = f"app-{uuid.uuid4().hex[:6]}"
    await test_redis.script_flush()
    [due] = await store.due_timers(app, {3: 40}, 0, 10)  # the timers' script too
    assert (due.partition, due.watermark_ms, due.members) == (3, 40, [])
    await test_redis.delete(timer_watermark_key(app, 3))


async def test_due_timers_cost_one_round_trip(store, test_redis):
    """No SCRIPT EXISTS before the batch's EVALSHAs: one command round trip per batch."""
    app = f"app-{uuid.uuid4().hex[:6]}"
    await store.due_timers(app, {0: 1}, 0, 10)  # the script is in Redis's cache from here
    before = await test_redis.info("commandstats")
    await store.due_timers(app, {0: 5, 1: 5, 2: 5}, 0, 10)
    after = await test_redis.info("commandstats")

    def calls(stats: dict, name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    assert calls(after, "script|exists") == calls(before, "script|exists")
    assert calls(after, "evalsha") - calls(before, "evalsha") >= 3
    await test_redis.delete(*(timer_watermark_key(app, p) for p in range(3)))


async def test_timer_index_entries_move_with_the_state_and_erase_removes_them(store,
                                                                              test_redis):
    a, app = cid(), f"app-{uuid.uuid4().hex[:6]}"
    k0, k1 = timer_index_key(app, 0), timer_index_key(app, 1)
    first = (k0, f"{a}|cart|100")
    await store.save([Write(a, 0, b"{}", b"[]", timers=(first,),
                            timers_add=((*first, 100),))])
    assert await test_redis.zrange(k0, 0, -1, withscores=True) == [(first[1].encode(), 100.0)]
    # The timer moved to partition 1, due 50: one entry added, the old one removed, atomically.
    second = (k1, f"{a}|cart|50")
    assert await store.save([Write(a, 1, b"{}", b"[]", timers=(second,),
                                   timers_add=((*second, 50),), timers_remove=(first,))]) == []
    assert await test_redis.zcard(k0) == 0 and await test_redis.zscore(k1, second[1]) == 50
    # A stale writer changes nothing, not even the index.
    assert await store.save([Write(a, 1, b"{}", b"[]", timers=(), timers_remove=(second,))]) \
        == [a]
    assert await test_redis.zcard(k1) == 1
    # Watermarks only rise; entries come due by watermark - lateness.
    [due] = await store.due_timers(app, {1: 40}, 0, 10)
    assert (due.watermark_ms, due.members) == (40, [])
    [due] = await store.due_timers(app, {1: 70}, 20, 10)
    assert (due.watermark_ms, due.members) == (70, [second[1]])
    [due] = await store.due_timers(app, {1: 10}, 0, 10)
    assert due.watermark_ms == 70
    assert await store.erase(a) == 1
    assert await test_redis.zcard(k1) == 0
    await test_redis.delete(k0, k1, timer_watermark_key(app, 1))


async def test_a_write_and_the_due_timers_share_one_round_trip(store, test_redis):
    """save_then_due: the writes first, so the query sees the timers they index; one EVALSHA
    pipeline, and both scripts reloaded when Redis lost them."""
    a, b, app = cid(), cid(), f"app-{uuid.uuid4().hex[:6]}"
    index = timer_index_key(app, 2)
    armed = (index, f"{a}|cart|30")
    await test_redis.script_flush()
    lost, due = await store.save_then_due(
        [Write(a, 0, b"{}", b"[]", timers=(armed,), timers_add=((*armed, 30),)),
         Write(b, 5, b"{}", b"[]")],  # a stale version: lost
        app, {2: 50}, 10, 10)
    assert lost == [b]
    assert [(d.partition, d.watermark_ms, d.members) for d in due] == [(2, 50, [armed[1]])]
    assert (await store.load([a]))[a].version == 1

    before = await test_redis.info("commandstats")
    lost, due = await store.save_then_due([Write(a, 1, b"{}", b"[]", timers=(armed,))], app,
                                          {2: 60, 3: 60}, 0, 10)
    after = await test_redis.info("commandstats")
    assert lost == [] and [d.partition for d in due] == [2, 3]

    def calls(stats: dict, name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    assert calls(after, "evalsha") - calls(before, "evalsha") >= 3  # one write, two partitions
    assert calls(after, "script|exists") == calls(before, "script|exists")
    assert calls(after, "script|load") == calls(before, "script|load")
    await store.erase(a)
    await test_redis.delete(index, *(timer_watermark_key(app, p) for p in (2, 3)))


async def test_a_new_profile_is_refused_when_an_erasure_came_between_read_and_write(store):
    a, t0 = cid(), 1_772_359_200_000
    assert (await store.load([a]))[a].erased_ms == 0
    await store.erase(a, t0, 60_000)  # forget, after the worker's read, before its write
    assert await store.save([Write(a, 0, b"{}", b"[]")]) == [a]  # computed without it: refused
    assert (await store.load([a]))[a].erased_ms == t0  # read again, it is there
    assert await store.save([Write(a, 0, b"{}", b"[]", erased_ms=t0)]) == []
    # An existing profile's write is checked by its version alone.
    assert await store.save([Write(a, 1, b"{}", b"[]")]) == []
    assert await store.erase(a, t0 + 5, 60_000) == 1
    assert (await store.load([a]))[a].erased_ms == t0 + 5
    record = erased_key(erasure_token(await store.erasure_key(), a))
    assert a not in record and 0 < await store.client.pttl(record) <= 60_000


class NotFolding(RedisStore):
    """A process that stops between an erasure and its fold."""

    async def fold(self, slots=None):
        return 0


async def test_an_erasure_a_crash_left_unfolded_is_folded_by_the_next_start(store, test_redis):
    a, b = cid(), cid()
    await store.save([Write(a, 0, b"{}", b"[]", ("100", "0", "5")),
                      Write(b, 0, b"{}", b"[]", ("100", "0", "5"))])
    assert await NotFolding(test_redis).erase(a) == 1
    assert (await store.histograms())["monetary"] == {"5": 2}  # a still counted
    assert await store.fold() == 3  # found by SCAN: a's three histogram moves
    assert await store.fold() == 0
    assert await store.histograms() == {"last_purchase_day": {"100": 1}, "frequency": {"0": 1},
                                        "monetary": {"5": 1}}
