"""Redis Cluster: every script's keys and every MULTI's keys are in one hash slot.

The slot function is checked against the cluster specification's examples; then the keys of
each script call the store makes (captured, no Redis) are asserted to share one slot, as Redis
Cluster requires (it refuses a script or transaction across slots: CROSSSLOT).
"""

from __future__ import annotations

import binascii
from typing import Any

import pytest

from streamproc.settings import Settings
from streamproc.state.keys import (
    HISTOGRAMS,
    SLOTS,
    aggregate_log_key,
    aggregate_seq_key,
    customer_key,
    customer_keys,
    customer_slot,
    erased_key,
    folded_key,
    histogram_key,
    key_slot,
    kpi_cohort_key,
    kpi_day_key,
    kpi_moves_key,
    kpi_sizes_key,
    latest_decisions_key,
    model_key,
    slot_tag,
    timer_index_key,
    timer_watermark_key,
    worker_key,
    workers_key,
)
from streamproc.state.store import (
    AggregateLogError,
    RedisStore,
    Write,
    _FoldGroup,
    parse_log_entry,
)


def test_the_slot_function_is_redis_clusters() -> None:
    # From the cluster specification: CRC16 XModem of "123456789" is 0x31C3; hash tags.
    assert key_slot("123456789") == 0x31C3 % SLOTS
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") \
        == key_slot("user1000")
    assert key_slot("foo{}{bar}") == binascii.crc_hqx(b"foo{}{bar}", 0) % SLOTS  # empty tag
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")


def test_every_slot_has_a_tag_that_lands_in_it() -> None:
    assert all(key_slot("{" + slot_tag(slot) + "}") == slot for slot in range(SLOTS))
    assert all(len(slot_tag(slot)) <= 5 for slot in range(SLOTS))


def test_a_customers_keys_share_their_slot() -> None:
    for cid in ("c-1", "alice@example.com", "x" * 128, "9"):
        slot = customer_slot(cid)
        keys = [*customer_keys(cid), customer_key(cid), latest_decisions_key(cid),
                erased_key("0" * 32, slot_tag(slot)), aggregate_log_key(slot),
                aggregate_seq_key(slot)]
        assert {key_slot(k) for k in keys} == {slot}, keys


def test_the_keys_each_other_script_or_multi_touches_share_a_slot() -> None:
    # The due-timers script, the heartbeat's MULTI, the model snapshots' keys.
    assert key_slot(timer_index_key("app", 7)) == key_slot(timer_watermark_key("app", 7))
    assert key_slot(workers_key("app")) == key_slot(worker_key("app", "host-1.pid-9"))
    assert len({key_slot(model_key("app", p)) for p in ("version", "serving", "learner")}) == 1


def declared(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The keys an ``EVALSHA sha numkeys key... arg...`` declares."""
    assert args[0] == "EVALSHA"
    return args[3:3 + args[2]]


def cluster_store() -> RedisStore:
    # A cluster client connects on its first command only: none is sent here.
    store = RedisStore.from_settings(Settings(redis_url="redis+cluster://127.0.0.1:1"))
    assert store.cluster
    return store


WRITE = Write("c-42", 3, b"{}", b"[]", ("100", "0", "5"),
              timers=((timer_index_key("app", 1), "c-42|cart|9"),),
              timers_add=((timer_index_key("app", 1), "c-42|cart|9", 9),),
              timers_remove=((timer_index_key("app", 2), "c-42|cart|5"),),
              latest=(("hero", b"{}"),), latest_ttl_ms=1000,
              kpis=((kpi_day_key("app", 20_513), 1000, (("a|b|c|shown", 1),)),
                    (kpi_sizes_key("app"), 1000, (("rfm:x", 1),))))


def test_the_compare_and_set_on_a_cluster_declares_keys_of_the_customers_slot_only() -> None:
    store = cluster_store()
    commands = store._write_commands([WRITE, Write("other", 0, b"{}", b"[]")], b"k" * 32)
    for (slot, args), cid in zip(commands, ("c-42", "other"), strict=True):
        keys = declared(args)
        assert {key_slot(k) for k in keys} == {customer_slot(cid)} == {slot}, keys
        assert customer_key(cid) in keys and aggregate_log_key(customer_slot(cid)) in keys


def test_on_one_redis_the_compare_and_set_declares_every_shared_key_it_updates() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert not store.cluster
    ((_, args),) = store._write_commands([WRITE], b"k" * 32)
    assert set(declared(args)) >= {histogram_key(h) for h in HISTOGRAMS} | {
        kpi_day_key("app", 20_513), kpi_sizes_key("app"), timer_index_key("app", 1),
        timer_index_key("app", 2)}


async def test_the_erase_script_declares_the_keys_it_deletes_all_in_one_slot() -> None:
    store = cluster_store()
    store._erasure_key = b"k" * 32
    sent: list[tuple[int, tuple[Any, ...]]] = []

    async def on_primaries(commands: Any) -> list[Any]:
        sent.extend(commands)
        return [0]

    store._on_primaries = on_primaries  # type: ignore[method-assign]

    async def no_fold(slots: Any = None) -> int:
        return 0

    store.fold = no_fold  # type: ignore[method-assign]
    await store.erase("c-42")
    ((slot, args),) = sent
    keys = declared(args)
    assert set(customer_keys("c-42")) <= set(keys)
    assert {key_slot(k) for k in keys} == {customer_slot("c-42")} == {slot}


def test_a_fold_groups_the_shared_keys_by_slot() -> None:
    shared = [histogram_key(h) for h in HISTOGRAMS] + [
        kpi_day_key("app", 20_513), kpi_moves_key("app", 20_513), kpi_cohort_key("app", 675),
        kpi_sizes_key("app"), timer_index_key("app", 0), timer_index_key("app", 11)]
    groups: dict[str, _FoldGroup] = {}
    for key in shared:
        groups.setdefault(folded_key(key), _FoldGroup()).add(5, 1, [("HINCRBY", key, "f", "1")])
    for tag_key, group in groups.items():
        keys, _ = group.arguments()
        assert {key_slot(k) for k in [tag_key, *keys]} == {key_slot(tag_key)}, keys
    # The app's KPI hashes fold together; each timer index and histogram on its own.
    assert len(groups) == len(HISTOGRAMS) + 1 + 2


@pytest.mark.parametrize("raw", [b"x []", b"3 {}", b'3 [["DEL","k"]]', b'3 [["HINCRBY"]]',
                                 b"3 [not json"])
def test_a_log_entry_runs_only_the_commands_the_scripts_write(raw: bytes) -> None:
    with pytest.raises(AggregateLogError):
        parse_log_entry(raw)
