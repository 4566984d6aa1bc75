"""Customer state storage in Redis, behind one small protocol (:class:`Store`; the same contract
in a dict for unit tests is :class:`streamproc.state.memory.MemoryStore`).

Each customer is one Redis hash (see :mod:`streamproc.state.keys`) with three fields: ``doc``
(the profile as JSON), ``ver`` (a version number bumped on every write) and ``outbox`` (the
decisions and other outputs of the customer's last batch of each input partition, so a
redelivered batch can publish them again: streamproc.processor.outbox_keeps). A batch costs
two round trips whatever its size: one pipelined read of every customer in it, and one
pipelined compare-and-set write (a Lua script per customer, atomic, that also keeps the
customer's latest decisions), with the query for the timers that came due in the same pipeline
(:meth:`RedisStore.save_then_due`). The compare-and-set fails when
another writer changed the customer since the read (a worker that lost the partition in a
rebalance but has not noticed yet); the processor then reads again and recomputes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import DataError, NoScriptError

from streamproc.errors import StreamprocError
from streamproc.redis_options import is_cluster, redis_client, redis_options
from streamproc.settings import Settings
from streamproc.state.document import unpack_doc, unpack_outbox
from streamproc.state.durable import Replication
from streamproc.state.erasure import erasure_token, new_erasure_key
from streamproc.state.keys import (
    ERASURE_KEY,
    HISTOGRAMS,
    REGIONS_KEY,
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
    latest_decisions_key,
    region_key,
    slot_tag,
    timer_index_key,
    timer_watermark_key,
)
from streamproc.state.regions import REGION_FIELDS, REGION_TTL_MS, parse_context

# KEYS: the customer's hash, the customer's latest decisions (streamproc.decisions.latest), the
# customer's erasure suppression record (streamproc.state.erasure), then the shared keys the
# write updates (direct mode: one histogram hash per RFM dimension, streamproc.state.keys, each
# KPI counter hash the write adds to, streamproc.decisions.kpis, the timer index,
# streamproc.decisions.timers, of each entry to add, then of each to remove) or, in log mode
# (Redis Cluster), the slot's aggregate log and its counter (streamproc.state.keys).
# ARGV: expected version, doc, new version, outbox, ttl in ms (0: none), the suppression
# record's value the write was computed with ('0': none), the mode ('log' or ''), the number of
# shared keys named in ARGV T (log mode) and their names, the number of histograms N, the
# customer's new bucket in each ('' when it has none), the customer's timer index entries after
# the write (field ``tidx``, what an erasure removes), how long the latest decisions must live
# (ms; negated: delete those kept before first, consent was withdrawn) and how many there are L,
# then (slot, record) per latest decision, the number of KPI hashes K, then per KPI hash: how
# long it must live (ms), the number of fields M and (field, increment) per field; the number of
# timer entries to add, then (member, due) per entry, the number to remove, then their members.
# A write of a new profile (expected version 0) is refused when the suppression record changed
# since: an erasure by `streamproc forget` or the API came in between, and the events must be
# read again against it.
# The KPI increments ride in this write so that they apply exactly when the state change does:
# a redelivered event changes neither, a refused write is recomputed with its increments.
# The customer's current buckets live in the hash fields h1..hN, so moving between buckets (and
# erasing) is exact and idempotent: the histograms count every customer once.
# Direct mode (one Redis) updates the shared keys in this atomic step. Log mode appends the
# same commands, as one entry numbered by the slot's counter, to the slot's log, in this atomic
# step; _FOLD_SCRIPT applies each entry once to the shared keys, which Redis Cluster keeps in
# other slots.
_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'ver')
if (current or '0') ~= ARGV[1] then
  return 0
end
if ARGV[1] == '0' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[6] then
  return 0
end
local log = ARGV[7] == 'log'
local named = tonumber(ARGV[8])
local ops = {}
local function target(i)
  if log then return ARGV[8 + i] end
  return KEYS[3 + i]
end
local function apply(name, key, a, b)
  if log then
    ops[#ops + 1] = {name, key, a, b}
  elseif name == 'KEEP' then
    if redis.call('PTTL', key) < tonumber(a) then redis.call('PEXPIRE', key, a) end
  elseif b == nil then
    redis.call(name, key, a)
  else
    redis.call(name, key, a, b)
  end
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'ver', ARGV[3], 'outbox', ARGV[4])
local arg = 9 + named
local n = tonumber(ARGV[arg])
arg = arg + 1
for i = 1, n do
  local field = 'h' .. i
  local old = redis.call('HGET', KEYS[1], field) or ''
  local new = ARGV[arg + i - 1]
  if old ~= new then
    if old ~= '' then apply('HINCRBY', target(i), old, -1) end
    if new ~= '' then
      apply('HINCRBY', target(i), new, 1)
      redis.call('HSET', KEYS[1], field, new)
    else
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
arg = arg + n
if ARGV[arg] ~= '' then
  redis.call('HSET', KEYS[1], 'tidx', ARGV[arg])
else
  redis.call('HDEL', KEYS[1], 'tidx')
end
local latest = KEYS[2]
local live = tonumber(ARGV[arg + 1])
local slots = tonumber(ARGV[arg + 2])
arg = arg + 3
if live < 0 then
  redis.call('DEL', latest)
  live = -live
end
for i = 1, slots do
  redis.call('HSET', latest, ARGV[arg], ARGV[arg + 1])
  arg = arg + 2
end
if slots > 0 and redis.call('PTTL', latest) < live then
  redis.call('PEXPIRE', latest, live)
end
local k = n + 1
local hashes = tonumber(ARGV[arg])
arg = arg + 1
for i = 1, hashes do
  local keep = ARGV[arg]
  local fields = tonumber(ARGV[arg + 1])
  arg = arg + 2
  for j = 1, fields do
    apply('HINCRBY', target(k), ARGV[arg], ARGV[arg + 1])
    arg = arg + 2
  end
  apply('KEEP', target(k), keep)
  k = k + 1
end
local adds = tonumber(ARGV[arg])
arg = arg + 1
for i = 1, adds do
  apply('ZADD', target(k), ARGV[arg + 1], ARGV[arg])
  k = k + 1
  arg = arg + 2
end
local removes = tonumber(ARGV[arg])
arg = arg + 1
for i = 1, removes do
  apply('ZREM', target(k), ARGV[arg])
  k = k + 1
  arg = arg + 1
end
if tonumber(ARGV[5]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if #ops > 0 then
  redis.call('RPUSH', KEYS[4], redis.call('INCR', KEYS[5]) .. ' ' .. cjson.encode(ops))
end
return 1
"""

# KEYS: the customer's hash, their latest decisions, their suppression record's key
# (streamproc.state.erasure), the slot's aggregate log and its counter. ARGV: the erasure's time
# (ms), how long its suppression record lives (ms; 0: none), then the name of each histogram.
# Logs taking the customer out of the histograms and their timer index entries (field tidx:
# lines of "index key <TAB> member") for _FOLD_SCRIPT (on every Redis: those keys may be in
# other slots), deletes the customer's keys and writes the suppression record (a later
# erasure's time wins); returns how many keys existed.
_ERASE_SCRIPT = """
local ops = {}
for i = 3, #ARGV do
  local old = redis.call('HGET', KEYS[1], 'h' .. (i - 2))
  if old then ops[#ops + 1] = {'HINCRBY', ARGV[i], old, -1} end
end
local tidx = redis.call('HGET', KEYS[1], 'tidx')
if tidx then
  for line in string.gmatch(tidx, '[^\\n]+') do
    local tab = string.find(line, '\\t', 1, true)
    if tab then
      ops[#ops + 1] = {'ZREM', string.sub(line, 1, tab - 1), string.sub(line, tab + 1)}
    end
  end
end
if #ops > 0 then
  redis.call('RPUSH', KEYS[4], redis.call('INCR', KEYS[5]) .. ' ' .. cjson.encode(ops))
end
local n = redis.call('DEL', KEYS[1]) + redis.call('DEL', KEYS[2])
if tonumber(ARGV[2]) > 0 and tonumber(ARGV[1]) >= tonumber(redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
end
return n
"""

# KEYS: the folded hash of one hash tag (streamproc.state.keys.folded_key), then the shared keys
# of that tag the entries update. ARGV: per source slot: the slot, its number of entries, then
# per entry: its sequence number, its number of commands, then per command: the name (HINCRBY,
# ZADD, ZREM or KEEP: PEXPIRE unless the key lives longer), the key's index in KEYS and two
# arguments ('' when unused). Applies the entries numbered above the slot's last folded one, in
# order, and records the last; returns the number of commands applied.
_FOLD_SCRIPT = """
local arg = 1
local applied = 0
while arg <= #ARGV do
  local source = ARGV[arg]
  local done = tonumber(redis.call('HGET', KEYS[1], source) or '0')
  local last = done
  local entries = tonumber(ARGV[arg + 1])
  arg = arg + 2
  for e = 1, entries do
    local seq = tonumber(ARGV[arg])
    local count = tonumber(ARGV[arg + 1])
    arg = arg + 2
    for i = 1, count do
      if seq > done then
        local name, key = ARGV[arg], KEYS[tonumber(ARGV[arg + 1])]
        local a, b = ARGV[arg + 2], ARGV[arg + 3]
        if name == 'KEEP' then
          if redis.call('PTTL', key) < tonumber(a) then redis.call('PEXPIRE', key, a) end
        elseif name == 'ZREM' then
          redis.call('ZREM', key, a)
        else
          redis.call(name, key, a, b)
        end
        applied = applied + 1
      end
      arg = arg + 4
    end
    if seq > last then last = seq end
  end
  if last > done then redis.call('HSET', KEYS[1], source, last) end
end
return applied
"""

# KEYS: a slot's aggregate log. ARGV: the last entry folded everywhere. Drops the entries up to
# it from the head of the log (new entries are appended at its tail meanwhile).
_TRIM_SCRIPT = """
local dropped = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local seq = tonumber(string.match(head, '^%d+'))
  if seq == nil or seq > tonumber(ARGV[1]) then break end
  redis.call('LPOP', KEYS[1])
  dropped = dropped + 1
end
return dropped
"""

# KEYS: a partition's watermark and its timer index. ARGV: the latest event time of the batch
# on that partition (ms), the lateness allowed (ms), the most entries to return. Raises the
# watermark (never lowers it) and returns it, then the entries due by watermark - lateness.
_DUE_SCRIPT = """
local wm = tonumber(redis.call('GET', KEYS[1]) or '0')
local seen = tonumber(ARGV[1])
if seen > wm then
  wm = seen
  redis.call('SET', KEYS[1], ARGV[1])
end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', wm - tonumber(ARGV[2]),
                       'LIMIT', 0, tonumber(ARGV[3]))
table.insert(due, 1, tostring(wm))
return due
"""


# A region's report (streamproc.state.regions): only a newer one (or one of the same event time)
# changes the region's context, and only the fields it sends.
# KEYS[1] the region's hash; ARGV[1] the report's event time (ms, a string: Lua would print a
# number of that size in floating point), ARGV[2] the key's time to live (ms), ARGV[3..] field,
# value pairs. Returns 1 when applied, 0 when the region's context is newer.
_REGION_SCRIPT = """
local known = redis.call('HGET', KEYS[1], 'ts_ms')
if known and tonumber(known) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'ts_ms', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Stored:
    version: int
    doc: bytes | None
    outbox: bytes | None
    # When the customer was last erased (epoch ms), while the suppression record lives
    # (streamproc.state.erasure); 0: no record.
    erased_ms: int = 0


@dataclass(frozen=True, slots=True)
class Write:
    customer_id: str
    expected_version: int
    doc: bytes
    outbox: bytes
    # The customer's bucket in each histogram of HISTOGRAMS ('' = not counted), and the expiry.
    buckets: tuple[str, ...] = ()
    ttl_ms: int = 0
    # Timer index entries (streamproc.decisions.timers): all of the customer's after the write,
    # those to add (index key, member, due ms) and those to remove (index key, member).
    timers: tuple[tuple[str, str], ...] = ()
    timers_add: tuple[tuple[str, str, int], ...] = ()
    timers_remove: tuple[tuple[str, str], ...] = ()
    # The customer's latest decisions (slot, record as JSON), and how long their key must live
    # from now (ms): streamproc.decisions.latest.latest_fields. Negated (at least -1): the
    # latest decisions kept before are deleted first (personalisation consent was withdrawn).
    latest: tuple[tuple[str, bytes], ...] = ()
    latest_ttl_ms: int = 0
    # KPI counter increments (streamproc.decisions.kpis.tally_fields): per counter hash, how
    # long it must live from now (ms) and (field, increment) pairs.
    kpis: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...] = ()
    # The customer's erasure time as loaded (Stored.erased_ms): a new profile's write is
    # refused when the suppression record no longer says so (an erasure came in between).
    erased_ms: int = 0


@dataclass(frozen=True, slots=True)
class DueTimers:
    """What one partition's timer index holds due: the partition's watermark and the entries."""

    partition: int
    watermark_ms: int
    members: list[str]


def timer_lines(entries: Sequence[tuple[str, str]]) -> str:
    """The ``tidx`` field: one "index key TAB member" line per timer index entry."""
    return "\n".join(f"{key}\t{member}" for key, member in entries)


class Store(Protocol):
    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        """Each customer's stored state, and the time of their erasure while its suppression
        record lives (``Stored.erased_ms``), in one round trip."""
        ...

    async def save(self, writes: Sequence[Write]) -> list[str]:
        """Apply the writes whose expected version still holds; return the customers that lost."""
        ...

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None: ...

    async def erase(self, customer_id: str, erased_ms: int = 0, suppress_ms: int = 0) -> int:
        """Delete every key of the customer and its histogram counts; with ``suppress_ms``,
        record the erasure (at ``erased_ms``) for that long (streamproc.state.erasure); return
        keys deleted."""
        ...

    async def histograms(self) -> dict[str, dict[str, int]]:
        """Every histogram of HISTOGRAMS: bucket -> customers in it."""
        ...

    async def due_timers(self, app_id: str, seen: Mapping[int, int], lateness_ms: int,
                         limit: int) -> list[DueTimers]:
        """Raise each partition's watermark to the latest event time ``seen`` on it and return
        the timer index entries due by watermark - lateness (at most ``limit`` a partition)."""
        ...

    async def save_then_due(self, writes: Sequence[Write], app_id: str, seen: Mapping[int, int],
                            lateness_ms: int, limit: int) -> tuple[list[str], list[DueTimers]]:
        """:meth:`save`, then :meth:`due_timers` (which sees the timers the writes indexed), in
        one round trip: the customers that lost, and the timers due."""
        ...

    async def clear_timers(self, entries: Sequence[tuple[str, str]]) -> None:
        """Remove fired timers' index entries (index key, member), once their outputs are out."""
        ...

    async def save_region(self, region: str, report: Mapping[str, Any]) -> bool:
        """Keep a region's report (``ts_ms`` and the fields sent) unless its context is newer;
        True when it was kept (:mod:`streamproc.state.regions`)."""
        ...

    async def region_contexts(self) -> dict[str, dict[str, Any]]:
        """Every region's current context (region id -> surroundings with ``ts_ms``)."""
        ...

    async def close(self) -> None: ...


def decode_profile(stored: Stored) -> dict[str, Any] | None:
    if stored.doc is None:
        return None
    return {
        "profile": unpack_doc(stored.doc),
        "version": stored.version,
        "last_outputs": unpack_outbox(stored.outbox),
    }


class _HiredisPacking:
    """Commands packed by hiredis, in C, as redis-py's synchronous connections do.

    redis-py's asyncio connections pack every command in Python. Packed here, the same bytes
    (tests/unit/test_store.py), a batch's compare-and-set write of a customer (an EVALSHA of 34
    arguments) takes 3.8 to 6.2 µs on a busy machine (docs/benchmarks.md, "The worker's cost
    outside the processor").
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command name of two words, e.g. "SCRIPT LOAD"
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:  # bytes, str, int and float as they are: no copy of the arguments first
            return [hiredis.pack_command(args)]
        except TypeError:
            pass  # a bytearray or memoryview (hiredis takes neither), or a value Redis cannot
        try:
            return [hiredis.pack_command(tuple(  # type: ignore[arg-type]
                bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args))]
        except TypeError as exc:
            raise DataError(str(exc)) from exc

    def pack_commands(self, commands: Any) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]


def with_hiredis_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client``, its new connections packing commands with hiredis (see _HiredisPacking); a
    cluster client as it is (its connections are made per node)."""
    if is_cluster(client):
        return client
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client


class RedisStore:
    """The :class:`Store` on one Redis or on a Redis Cluster (the client says which: see
    :func:`streamproc.redis_options.redis_client`).

    On a cluster the shared keys (RFM histograms, KPI counters, timer indexes) leave the
    customer's atomic step: the compare-and-set logs their updates in the customer's slot and
    :meth:`fold` applies them once each, right after the write (four round trips a batch
    instead of two). Erasures log theirs on every Redis.
    """

    def __init__(self, client: aioredis.Redis, replica_wait_ms: int = 500) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        # On a cluster: how long the writes of a batch wait for their primaries' replicas
        # (streamproc.state.durable), and the waits that came back short.
        self.replication = Replication(replica_wait_ms)
        self._cas = client.register_script(_CAS_SCRIPT)
        self._erase = client.register_script(_ERASE_SCRIPT)
        self._due = client.register_script(_DUE_SCRIPT)
        self._fold = client.register_script(_FOLD_SCRIPT)
        self._trim = client.register_script(_TRIM_SCRIPT)
        self._region = client.register_script(_REGION_SCRIPT)
        self._histogram_keys = [histogram_key(name) for name in HISTOGRAMS]
        self._erasure_key: bytes | None = None
        self._unfolded: set[int] = set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """A store on ``url``; ``options`` are redis-py's (the TLS ones of
        ``redis_options``)."""
        return cls(with_hiredis_packing(aioredis.from_url(
            url, decode_responses=False, health_check_interval=30, **options)))

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """The store every streamproc process uses: ``STREAMPROC_REDIS_URL`` with its TLS
        settings (a cluster client for a Redis Cluster)."""
        if settings.redis_is_cluster:
            return cls(redis_client(settings, decode_responses=False),
                       replica_wait_ms=settings.redis_replica_wait_ms)
        return cls.from_url(settings.redis_url, **redis_options(settings))

    def _erased_key(self, secret: bytes, customer_id: str) -> str:
        tag = slot_tag(customer_slot(customer_id)) if self.cluster else None
        return erased_key(erasure_token(secret, customer_id), tag)

    async def erasure_key(self) -> bytes:
        """The key of the suppression records' hash: made by the first process that needs it
        (SET NX: every process sharing this Redis uses the same), then kept in memory."""
        if self._erasure_key is None:
            await self.client.set(ERASURE_KEY, new_erasure_key(), nx=True)
            key = await self.client.get(ERASURE_KEY)
            if not key:
                raise RuntimeError(f"Redis lost {ERASURE_KEY} as soon as it was written")
            self._erasure_key = key if isinstance(key, bytes) else key.encode()
        return self._erasure_key

    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        if not customer_ids:
            return {}
        secret = await self.erasure_key()
        pipe = self.client.pipeline(transaction=False)
        for cid in customer_ids:
            pipe.hmget(customer_key(cid), "ver", "doc", "outbox")
        records = [self._erased_key(secret, cid) for cid in customer_ids]
        if self.cluster:  # one slot per command
            for record in records:
                pipe.get(record)
            replies = await pipe.execute()
            rows, erased = replies[:len(customer_ids)], replies[len(customer_ids):]
        else:
            # One MGET for every suppression record: a GET per customer doubled the read's
            # cost (redis-py handles each reply in Python; measured 50 -> 100 µs a customer).
            pipe.mget(records)
            *rows, erased = await pipe.execute()
        return {
            cid: Stored(int(ver or 0), doc, outbox, int(when or 0))
            for cid, (ver, doc, outbox), when in zip(customer_ids, rows, erased, strict=True)
        }

    async def read_doc(self, customer_id: str) -> bytes | None:
        """The customer's stored profile document alone (None: no profile), in one command: the
        HTTP API's read per decide, cheaper than a pipeline of one (:meth:`load`)."""
        doc = await self.client.hget(customer_key(customer_id), "doc")
        return doc.encode() if isinstance(doc, str) else doc  # bytes: decode_responses is off

    async def _reloading(self, scripts: Sequence[AsyncScript],
                         run: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        """``run`` (a pipeline of EVALSHAs of ``scripts``, queued directly: a script registered
        on the pipeline would cost a SCRIPT EXISTS round trip every time), and once more after
        loading the scripts when Redis lost them (a restart, SCRIPT FLUSH, a replica promoted
        by a failover)."""
        try:
            return await run()
        except NoScriptError:
            for script in scripts:
                script.sha = await self.client.script_load(script.script)
            return await run()

    # Written again after a lost script: a write that went through before is then refused by its
    # version, reported as lost, and recomputed from what it wrote: never applied twice.
    async def save(self, writes: Sequence[Write]) -> list[str]:
        lost, _ = await self.save_then_due(writes, "", {}, 0, 0)
        return lost

    async def save_then_due(self, writes: Sequence[Write], app_id: str, seen: Mapping[int, int],
                            lateness_ms: int, limit: int) -> tuple[list[str], list[DueTimers]]:
        partitions = sorted(seen)
        secret = await self.erasure_key()
        # On a cluster: the writes and their slots' logs, then the folds, then the due timers
        # (which see the entries folded).
        # (with the slots whose fold failed before: a retried batch may write none of them)
        slots = sorted({customer_slot(w.customer_id) for w in writes} | self._unfolded
                       if self.cluster else ())
        self._unfolded.update(slots)

        async def run() -> list[Any]:
            commands = self._write_commands(writes, secret)  # first: the query sees them
            if self.cluster:  # replicated before the batch's offsets are committed
                return await self._on_primaries(
                    [*commands, *((slot, ("LRANGE", aggregate_log_key(slot), 0, -1))
                                  for slot in slots)])
            pipe = self._pipeline_of(commands)
            self._queue_due(pipe, app_id, seen, partitions, lateness_ms, limit)
            return await pipe.execute()

        rows = await self._reloading((self._cas, self._due), run)
        lost = _lost(writes, rows[:len(writes)])
        if not self.cluster:
            return lost, _due_rows(partitions, rows[len(writes):])
        await self._fold_logs(dict(zip(slots, rows[len(writes):], strict=True)))
        self._unfolded.difference_update(slots)
        return lost, (await self.due_timers(app_id, seen, lateness_ms, limit)
                      if partitions else [])

    def _pipeline_of(self, commands: Sequence[tuple[int, tuple[Any, ...]]]) -> Pipeline:
        """A pipeline (one Redis) with ``commands`` queued."""
        pipe = self.client.pipeline(transaction=False)
        for _, args in commands:
            pipe.execute_command(*args)
        return pipe

    async def _on_primaries(self, commands: Sequence[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        return await self.replication.run(cast(RedisCluster, self.client), commands)

    def _write_commands(self, writes: Sequence[Write],
                        secret: bytes) -> list[tuple[int, tuple[Any, ...]]]:
        """The compare-and-set of each write, with its customer's slot (0 on one Redis)."""
        empty = ("",) * len(HISTOGRAMS)
        commands: list[tuple[int, tuple[Any, ...]]] = []
        for w in writes:
            buckets = w.buckets or empty
            shared = [*self._histogram_keys, *(key for key, _, _ in w.kpis),
                      *(key for key, _, _ in w.timers_add), *(key for key, _ in w.timers_remove)]
            slot = 0
            if self.cluster:
                slot = customer_slot(w.customer_id)
                keys = [aggregate_log_key(slot), aggregate_seq_key(slot)]
                mode, named = "log", shared
            else:
                keys, mode, named = shared, "", []
            adds = [a for _, member, due in w.timers_add for a in (member, due)]
            kpis = [a for _, ttl, fields in w.kpis
                    for a in (ttl, len(fields), *(x for pair in fields for x in pair))]
            commands.append((slot, (
                "EVALSHA", self._cas.sha, 3 + len(keys),
                customer_key(w.customer_id), latest_decisions_key(w.customer_id),
                self._erased_key(secret, w.customer_id), *keys,
                w.expected_version, w.doc, w.expected_version + 1, w.outbox, w.ttl_ms,
                w.erased_ms, mode, len(named), *named,
                len(buckets), *buckets, timer_lines(w.timers),
                w.latest_ttl_ms, len(w.latest), *(x for field in w.latest for x in field),
                len(w.kpis), *kpis,
                len(w.timers_add), *adds,
                len(w.timers_remove), *(member for _, member in w.timers_remove))))
        return commands

    def _queue_due(self, pipe: Any, app_id: str, seen: Mapping[int, int],
                   partitions: Sequence[int], lateness_ms: int, limit: int) -> None:
        for partition in partitions:
            pipe.evalsha(self._due.sha, 2, timer_watermark_key(app_id, partition),
                         timer_index_key(app_id, partition), seen[partition], lateness_ms, limit)

    async def fold(self, slots: Sequence[int] | None = None) -> int:
        """Apply the pending aggregate updates of ``slots`` (all 16,384 when None) to the shared
        keys, each once, and drop them from the logs; return the commands applied.

        The repair after a process stopped between a write and its fold (every worker calls it
        at start): the logs are the truth until folded, so nothing is lost or counted twice.
        On one Redis, where only erasures log, the logs are found by SCAN.
        """
        if slots is not None:
            chosen: Sequence[int] = sorted(set(slots))
        elif self.cluster:  # a constant cost, whatever the size of the keyspace
            chosen = range(SLOTS)
        else:  # one Redis: only erasures log, the logs are few; SCAN costs Python little
            chosen = sorted({key_slot(key) async for key in self.client.scan_iter(
                match=aggregate_log_key(0).replace(slot_tag(0), "*"), count=1000)})
        applied = 0
        step = 2048  # bounded pipelines on a sweep of every slot
        for at in range(0, len(chosen), step):
            part = chosen[at:at + step]
            pipe = self.client.pipeline(transaction=False)
            for slot in part:
                pipe.lrange(aggregate_log_key(slot), 0, -1)
            applied += await self._fold_logs(dict(zip(part, await pipe.execute(), strict=True)))
        return applied

    async def _fold_logs(self, logs: Mapping[int, Sequence[bytes]]) -> int:
        """Fold the log entries read (slot -> entries), then trim them from the logs."""
        groups: dict[str, _FoldGroup] = {}
        last: dict[int, int] = {}
        for slot, entries in logs.items():
            for raw in entries:
                seq, commands = parse_log_entry(raw)
                last[slot] = max(last.get(slot, 0), seq)
                by_tag: dict[str, list[tuple[str, str, str, str]]] = {}
                for command in commands:
                    by_tag.setdefault(folded_key(command[1]), []).append(command)
                for tag_key, cmds in by_tag.items():
                    groups.setdefault(tag_key, _FoldGroup()).add(slot, seq, cmds)
        if not last:
            return 0

        # Replicated before the entries are trimmed from the logs (the logs are the truth
        # until then): a failover cannot take a fold whose entries are gone.
        async def fold() -> list[Any]:
            commands = []
            for tag_key, group in groups.items():
                keys, args = group.arguments()
                commands.append((key_slot(tag_key), (
                    "EVALSHA", self._fold.sha, 1 + len(keys), tag_key, *keys, *args)))
            if self.cluster:
                return await self._on_primaries(commands)
            return await self._pipeline_of(commands).execute()

        applied = sum(int(n) for n in await self._reloading((self._fold,), fold))

        async def trim() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for slot, seq in last.items():
                pipe.evalsha(self._trim.sha, 1, aggregate_log_key(slot), seq)
            return await pipe.execute()

        await self._reloading((self._trim,), trim)
        return applied

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None:
        return decode_profile((await self.load([customer_id]))[customer_id])

    async def erase(self, customer_id: str, erased_ms: int = 0, suppress_ms: int = 0) -> int:
        main, latest = customer_keys(customer_id)
        slot = customer_slot(customer_id)
        record = self._erased_key(await self.erasure_key(), customer_id)
        keys = [main, latest, record, aggregate_log_key(slot), aggregate_seq_key(slot)]
        args: list[Any] = [erased_ms, suppress_ms, *self._histogram_keys]
        if self.cluster:  # replicated before it is reported done
            [erased] = await self._reloading((self._erase,), lambda: self._on_primaries(
                [(slot, ("EVALSHA", self._erase.sha, len(keys), *keys, *args))]))
        else:
            erased = await self._erase(keys=keys, args=args)
        await self.fold([slot])
        return int(erased)

    async def histograms(self) -> dict[str, dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for key in self._histogram_keys:
            pipe.hgetall(key)
        rows = await pipe.execute()
        return {
            name: {k.decode(): int(v) for k, v in row.items() if int(v) > 0}
            for name, row in zip(HISTOGRAMS, rows, strict=True)
        }

    async def due_timers(self, app_id: str, seen: Mapping[int, int], lateness_ms: int,
                         limit: int) -> list[DueTimers]:
        partitions = sorted(seen)

        async def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            self._queue_due(pipe, app_id, seen, partitions, lateness_ms, limit)
            return await pipe.execute()

        # Asked again after a lost script: it only raises watermarks.
        return _due_rows(partitions, await self._reloading((self._due,), run))

    async def clear_timers(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, member in entries:
            pipe.zrem(key, member)
        await pipe.execute()

    async def save_region(self, region: str, report: Mapping[str, Any]) -> bool:
        pairs = [str(v) for k in REGION_FIELDS if k in report for v in (k, report[k])]
        # Two commands, two slots on a cluster: the index first, so a region whose context
        # exists is always listed (a listed region without a context is dropped when read).
        await self.client.sadd(REGIONS_KEY, region)
        applied = await self._region(keys=[region_key(region)],
                                     args=[str(int(report["ts_ms"])), REGION_TTL_MS, *pairs])
        return bool(applied)

    async def region_contexts(self) -> dict[str, dict[str, Any]]:
        regions = sorted(r.decode() if isinstance(r, bytes) else str(r)
                         for r in await self.client.smembers(REGIONS_KEY))
        if not regions:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for region in regions:
            pipe.hgetall(region_key(region))
        rows = await pipe.execute()
        found = {region: parse_context(row) for region, row in zip(regions, rows, strict=True)}
        gone = [region for region, context in found.items() if context is None]
        if gone:  # expired: no report for REGION_TTL_MS
            await self.client.srem(REGIONS_KEY, *gone)
        return {region: context for region, context in found.items() if context is not None}

    async def close(self) -> None:
        await self.client.aclose()


# The commands a log entry may hold (anything else in Redis is refused, not run).
_LOGGED = frozenset({"HINCRBY", "ZADD", "ZREM", "KEEP"})


class AggregateLogError(StreamprocError):
    """An aggregate log entry that is not what the scripts write."""


def parse_log_entry(raw: bytes | str) -> tuple[int, list[tuple[str, str, str, str]]]:
    """A log entry's sequence number and commands (name, key, two arguments).

    >>> parse_log_entry(b'7 [["HINCRBY","sp:kpi:{a}:sizes","x",-1],["ZREM","k","m"]]')
    (7, [('HINCRBY', 'sp:kpi:{a}:sizes', 'x', '-1'), ('ZREM', 'k', 'm', '')])
    """
    text = raw.decode() if isinstance(raw, bytes) else raw
    head, _, body = text.partition(" ")
    try:
        seq, commands = int(head), orjson.loads(body)
    except (ValueError, orjson.JSONDecodeError):
        raise AggregateLogError(f"unreadable aggregate log entry {text[:80]!r}") from None
    out = []
    for command in commands if isinstance(commands, list) else [None]:
        if (not isinstance(command, list) or not 2 <= len(command) <= 4
                or command[0] not in _LOGGED):
            raise AggregateLogError(f"unexpected aggregate log command {str(command)[:80]!r}")
        name, key, *rest = (_text(x) for x in command)
        out.append((name, key, *(rest + ["", ""])[:2]))
    return seq, [(a, b, c, d) for a, b, c, d in out]


def _text(value: Any) -> str:
    # cjson writes Lua numbers as JSON numbers (integers here: increments, -1)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _FoldGroup:
    """The log entries of one hash tag's shared keys: the arguments of one _FOLD_SCRIPT."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.sources: dict[int, list[tuple[int, list[tuple[str, str, str, str]]]]] = {}

    def add(self, slot: int, seq: int, commands: list[tuple[str, str, str, str]]) -> None:
        for _, key, _, _ in commands:
            self.keys.setdefault(key, len(self.keys) + 2)  # KEYS[1] is the folded hash
        self.sources.setdefault(slot, []).append((seq, commands))

    def arguments(self) -> tuple[list[str], list[Any]]:
        args: list[Any] = []
        for slot, entries in self.sources.items():
            args += [slot, len(entries)]
            for seq, commands in entries:
                args += [seq, len(commands)]
                for name, key, a, b in commands:
                    args += [name, self.keys[key], a, b]
        return list(self.keys), args


def _lost(writes: Sequence[Write], results: Sequence[Any]) -> list[str]:
    return [w.customer_id for w, ok in zip(writes, results, strict=True) if not ok]


def _due_rows(partitions: Sequence[int], rows: Sequence[Any]) -> list[DueTimers]:
    return [DueTimers(partition, int(row[0]), [m.decode() for m in row[1:]])
            for partition, row in zip(partitions, rows, strict=True)]
