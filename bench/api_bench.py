"""HTTP API benchmark: decide latency under open-loop load, and events accepted per second.

    .venv/bin/python -m bench.api_bench [--customers 2000] [--events 60000] [--batch 500]
                                        [--rates 200,500,1000] [--seconds 10] [--json out.json]
                                        [--client raw|aiohttp] [--set STREAMPROC_NAME=VALUE]

Needs the local stack (``streamproc stack up``; the usual ``STREAMPROC_*`` settings say where).
The bench starts its own worker and ``streamproc serve`` on fresh topics (``apibench-<run>.``)
and Redis database 11 (refused when it holds keys), and drives them from a **separate process**
on loopback, so the client's CPU is not the server's event loop:

1. **Events**: ``--events`` events (page and product views, cart adds, spread over
   ``--customers`` customers) posted to ``POST /v1/events`` in arrays of ``--batch``, by
   ``--concurrency`` requests in flight. Reported: events accepted (202, in Kafka with
   ``acks=all``) per second over the whole phase. The same events make the customers' profiles.
2. The worker applies them (the bench waits until sampled customers' profiles have every event).
3. **Decide**, for each of ``--rates``: ``GET /v1/decide`` for a random known customer and
   ``homepage_hero`` at a fixed rate for ``--seconds`` (open loop: request ``i`` is due at
   ``t0 + i / rate`` whatever the answers before it, and its latency counts from when it was due,
   so a slow server cannot hide its queue). The client shares the cores, so it is cheap: raw
   keep-alive HTTP/1.1 connections (64 opened first, more when all are busy, their connect time
   counted), one request at a time on each, written by a loop timer when due
   (``--client aiohttp``: aiohttp's client, a task per request, as before). Reported: p50, p99,
   max, answers that were the neutral fallback (a missed deadline shows there), errors, and the
   cores used by the API and the worker (which records every served decision's exposure), by
   the client, and by the whole machine.

``--set`` passes a setting to the bench's worker and API (``STREAMPROC_API_EXPOSURE_WAIT_MS=50``:
decides wait for Kafka's confirmation). Its customers send no consent, so the worker and the API
take personalisation as granted (``STREAMPROC_CONSENT_DEFAULTS=personalisation=granted``).

Bounded: every phase has a count and a time limit; unanswered requests count as errors.
Progress goes to stderr, the table to stdout, everything to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from streamproc.benchmark.machine import cores_between, cpu_sample, machine
from streamproc.benchmark.measure import percentile
from streamproc.settings import Settings
from streamproc.stack import ensure_topics
from streamproc.state.store import RedisStore

REDIS_DB = 11
KEY = "api-bench-key-0001"
PRODUCTS = [("shoes-7", "shoes", 89.95), ("shoes-12", "shoes", 119.0), ("bags-5", "bags", 59.0),
            ("apparel-4", "apparel", 39.0), ("baby-3", "baby", 19.9)]
READY_S = 60.0
APPLY_S = 300.0
DRAIN_S = 10.0  # how long answers may still come after the last request of a phase was due


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def customers_of(run: str, n: int) -> list[str]:
    return [f"apib-{run}-c{i:05d}" for i in range(n)]


def events_for(customers: list[str], total: int) -> list[dict[str, Any]]:
    """Round robin over the customers: views, and a cart add every fifth event."""
    out = []
    for i in range(total):
        cid = customers[i % len(customers)]
        pid, cat, price = PRODUCTS[(i // len(customers) + i) % len(PRODUCTS)]
        product = {"product_id": pid, "category": cat, "price": price}
        kind = i // len(customers) % 5
        if kind == 4:
            out.append({"type": "cart_add", "customer_id": cid, "product": product, "quantity": 1})
        elif kind == 0:
            out.append({"type": "page_view", "customer_id": cid, "url": "https://shop.example/",
                        "page_type": "home"})
        else:
            out.append({"type": "product_view", "customer_id": cid, "product": product})
    return out


# -- the load, in its own process ---------------------------------------------------------------

async def _post_events(url: str, events: list[dict[str, Any]], batch: int,
                       concurrency: int) -> dict[str, Any]:
    bodies = [json.dumps(events[i:i + batch]).encode() for i in range(0, len(events), batch)]
    statuses: dict[int, int] = {}
    accepted = 0
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    next_body = iter(bodies)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def sender() -> None:
            nonlocal accepted
            for body in next_body:
                async with http.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                    answer = await resp.json()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    accepted += len(answer.get("accepted", []))

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"events": len(events), "accepted": accepted, "seconds": elapsed,
            "requests": len(bodies), "statuses": statuses}


class _Answer(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time (no pipelining: an
    answer never waits behind another's). Reads ``Content-Length`` bodies, as the API sends."""

    def __init__(self, pool: list[_Answer], idle: bool) -> None:
        self.pool = pool
        self.idle = idle  # joins the pool when connected (else it is made for a request)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.done: Callable[[int, bytes | None], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.idle:
            self.pool.append(self)

    def send(self, request: bytes, done: Callable[[int, bytes | None], None]) -> None:
        assert self.transport is not None
        self.done = done
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = parse_response(self.buf)
        if parsed is None:
            return
        status, body, used = parsed
        del self.buf[:used]
        done, self.done = self.done, None
        self.pool.append(self)
        if done is not None:
            done(status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        done, self.done = self.done, None
        if done is not None:
            done(0, None)


def parse_response(buf: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first complete HTTP/1.1 response in ``buf``, or None
    while it is incomplete.

    >>> parse_response(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}rest")
    (200, b'{}', 40)
    >>> parse_response(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\n{}") is None
    True
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head[1:]
                   if line[:15].lower() == b"content-length:"), None)
    if length is None:
        raise ValueError("an answer without Content-Length")
    if len(buf) < end + 4 + length:
        return None
    return int(head[0].split()[1]), bytes(buf[end + 4:end + 4 + length]), end + 4 + length


async def _decide_open_loop(url: str, customers: list[str], rate: int, seconds: float,
                            slot: str, seed: int, connections: int = 64) -> dict[str, Any]:
    """Open-loop decides over raw keep-alive connections: request ``i`` is written when it is
    due (a timer of the loop), on an idle connection or a new one (its connect time counted),
    and its latency runs from when it was due to its answer's last byte."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    lat: list[float] = [-1.0] * n
    server_ms: list[float] = []
    outcome = {"fallback": 0, "personalised": 0, "errors": 0}
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [(f"GET /v1/decide?{urlencode({'customer_id': rng.choice(customers), 'slot': slot})}"
                 f" HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {KEY}\r\n\r\n").encode()
                for _ in range(n)]
    loop = asyncio.get_running_loop()
    idle: list[_Answer] = []
    for _ in range(connections):
        await loop.create_connection(lambda: _Answer(idle, True), host, port)
    left = n
    finished = loop.create_future()

    def answered(i: int, due: float, status: int, body: bytes | None) -> None:
        nonlocal left
        now = loop.time()
        left -= 1
        if left == 0 and not finished.done():
            finished.set_result(None)
        if status != 200 or body is None:
            outcome["errors"] += 1
            return
        try:
            answer = orjson.loads(body)
            decision = answer["decision"]
        except (ValueError, KeyError, TypeError):
            outcome["errors"] += 1
            return
        lat[i] = (now - due) * 1000
        server_ms.append(decision.get("latency_ms", 0))
        if answer["exposure"] == "none":
            outcome["fallback"] += 1
        if decision.get("personalised"):
            outcome["personalised"] += 1

    async def connect_and_send(i: int, due: float) -> None:
        try:
            _, conn = await loop.create_connection(lambda: _Answer(idle, False), host, port)
        except OSError:
            answered(i, due, 0, None)
            return
        conn.send(requests[i], lambda status, body: answered(i, due, status, body))

    background: set[asyncio.Task[None]] = set()

    def fire(i: int, due: float) -> None:
        if idle:
            conn = idle.pop()
            conn.send(requests[i], lambda status, body: answered(i, due, status, body))
        else:
            task = loop.create_task(connect_and_send(i, due))
            background.add(task)
            task.add_done_callback(background.discard)

    t0 = loop.time() + 0.05
    for i in range(n):
        loop.call_at(t0 + i / rate, fire, i, t0 + i / rate)
    await asyncio.sleep(seconds + 0.05)
    sent_s = loop.time() - t0
    try:
        await asyncio.wait_for(asyncio.shield(finished), DRAIN_S)
    except TimeoutError:
        pass
    for conn in list(idle):
        assert conn.transport is not None
        conn.transport.close()
    answered_ms = [x for x in lat if x >= 0]
    return {"rate": rate, "requests": n, "answered": len(answered_ms), "send_seconds": sent_s,
            "unanswered": left, **outcome, **_figures(answered_ms, server_ms)}


def _figures(answered: list[float], server_ms: list[float]) -> dict[str, Any]:
    return {"p50_ms": percentile(answered, 0.5) if answered else None,
            "p99_ms": percentile(answered, 0.99) if answered else None,
            "max_ms": max(answered) if answered else None,
            "server_p50_ms": percentile(server_ms, 0.5) if server_ms else None,
            "server_p99_ms": percentile(server_ms, 0.99) if server_ms else None}


async def _decide_open_loop_aiohttp(url: str, customers: list[str], rate: int, seconds: float,
                                    slot: str, seed: int) -> dict[str, Any]:
    """The same load through aiohttp's client (a task per request): dearer per request, so
    more of the shared cores go to the client."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    lat: list[float] = [-1.0] * n
    server_ms: list[float] = []
    outcome = {"fallback": 0, "personalised": 0, "errors": 0}
    params = [{"customer_id": rng.choice(customers), "slot": slot} for _ in range(n)]
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=DRAIN_S)) as http:
        async def one(i: int, due: float) -> None:
            try:
                async with http.get(f"{url}/v1/decide", params=params[i],
                                    headers={"X-API-Key": KEY}) as resp:
                    body = await resp.json()
                if resp.status != 200:
                    outcome["errors"] += 1
                    return
                lat[i] = (time.perf_counter() - due) * 1000
                decision = body["decision"]
                server_ms.append(decision.get("latency_ms", 0))
                if body["exposure"] == "none":
                    outcome["fallback"] += 1
                if decision.get("personalised"):
                    outcome["personalised"] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError):
                outcome["errors"] += 1

        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        sent_s = time.perf_counter() - t0
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_S)
        for task in pending:
            task.cancel()
    answered = [x for x in lat if x >= 0]
    return {"rate": rate, "requests": n, "answered": len(answered), "send_seconds": sent_s,
            "unanswered": len(pending), **outcome, **_figures(answered, server_ms)}



def _load_process(job: dict[str, Any], out: Any) -> None:
    cpu0 = time.process_time()
    if job["kind"] == "events":
        result = asyncio.run(_post_events(job["url"], job["events"], job["batch"],
                                          job["concurrency"]))
    else:
        load = _decide_open_loop if job["client"] == "raw" else _decide_open_loop_aiohttp
        result = asyncio.run(load(job["url"], job["customers"], job["rate"], job["seconds"],
                                  job["slot"], job["seed"]))
    result["client_cpu_s"] = time.process_time() - cpu0  # the load's own share of the cores
    out.put(result)


def run_load(job: dict[str, Any], pids: list[int], limit_s: float) -> dict[str, Any]:
    """The job in a fresh process; its result with the cores the servers (``pids``) used."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_load_process, args=(job, out))
    before, t0 = cpu_sample(pids), time.monotonic()
    proc.start()
    try:
        result: dict[str, Any] = out.get(timeout=limit_s)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    elapsed = time.monotonic() - t0
    result["cores"] = cores_between(before, cpu_sample(pids), elapsed)
    result["client_cores"] = round(result["client_cpu_s"] / elapsed, 2)
    return result


# -- the servers --------------------------------------------------------------------------------

def start(command: list[str], env: dict[str, str], logfile: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "streamproc.cli", *command], env=env,
                            stdout=logfile.open("wb"), stderr=subprocess.STDOUT)


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"streamproc serve exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"the API at {url} was not ready within {READY_S:.0f} s")


async def wait_applied(redis_url: str, customers: list[str], per_customer: int) -> float:
    """Seconds until sampled customers' profiles count every one of their events."""
    store = RedisStore.from_url(redis_url)
    sample = customers[-20:]
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < APPLY_S:
            done = 0
            for cid in sample:
                found = await store.read_profile(cid)
                counts = (found or {}).get("profile", {}).get("counts", {})
                done += sum(counts.get(t, 0) for t in ("page_view", "product_view",
                                                       "cart_add")) >= per_customer
            if done == len(sample):
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
    finally:
        await store.close()
    raise SystemExit(f"the worker did not apply the events within {APPLY_S:.0f} s")


async def redis_db(url: str, flush: bool = False) -> tuple[int, dict[str, Any]]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        if flush:
            await client.flushdb()
        info = {**await client.info("server"), **await client.info("memory")}
        return int(await client.dbsize()), info
    finally:
        await client.aclose()


def with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rates", default="200,500,1000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--slot", default="homepage_hero")
    ap.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                    help="decide load over raw keep-alive connections (default, cheaper) or "
                         "aiohttp's client")
    ap.add_argument("--set", action="append", default=[], metavar="STREAMPROC_NAME=VALUE",
                    help="a setting of the bench's worker and API (repeatable), e.g. "
                         "STREAMPROC_API_EXPOSURE_WAIT_MS=0")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    extra = dict(s.split("=", 1) for s in args.set if "=" in s)
    if len(extra) != len(args.set) or not all(k.startswith("STREAMPROC_") for k in extra):
        ap.error("--set takes STREAMPROC_NAME=VALUE")
    rates = [int(r) for r in args.rates.split(",")]
    if args.events < args.customers or not 1 <= args.batch <= 500:
        ap.error("--events must be at least --customers, and --batch 1 to 500")

    base = Settings.from_env()
    run = uuid.uuid4().hex[:8]
    redis_url = with_db(base.redis_url, REDIS_DB)
    held, info = asyncio.run(redis_db(redis_url))
    if held:
        raise SystemExit(f"Redis database {REDIS_DB} holds {held} keys: the bench uses it alone")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    port = free_port()
    env.update({
        "STREAMPROC_KAFKA_BOOTSTRAP": base.kafka_bootstrap, "STREAMPROC_REDIS_URL": redis_url,
        "STREAMPROC_TOPIC_PREFIX": f"apibench-{run}.", "STREAMPROC_APP_ID": f"apibench-{run}",
        "STREAMPROC_API_KEYS": f"bench={KEY}", "STREAMPROC_API_RATE": "0",
        "STREAMPROC_API_PORT": str(port), "STREAMPROC_LOG_LEVEL": "warning",
        # Its customers send no consent_update: a shop that takes personalisation as granted
        # (the shipped default denies it, and nobody would be profiled or decided for).
        "STREAMPROC_CONSENT_DEFAULTS": "personalisation=granted", **extra,
    })
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    logs = Path(tempfile.mkdtemp(prefix="api-bench-"))
    url = f"http://127.0.0.1:{port}"
    worker = start(["worker"], env, logs / "worker.log")
    api = start(["serve"], env, logs / "api.log")
    report: dict[str, Any] = {"machine": {**machine(info), "load_average": [
        round(x, 2) for x in os.getloadavg()]}, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        asyncio.run(wait_ready(url, api))
        customers = customers_of(run, args.customers)
        log(f"events: {args.events} in arrays of {args.batch}, {args.concurrency} in flight")
        ev = run_load({"kind": "events", "url": url, "events": events_for(customers, args.events),
                       "batch": args.batch, "concurrency": args.concurrency},
                      [api.pid], limit_s=300)
        ev["events_per_s"] = ev["accepted"] / ev["seconds"]
        report["events"] = ev
        log(f"  {ev['events_per_s']:,.0f} events/s accepted; waiting for the worker")
        report["applied_after_s"] = asyncio.run(
            wait_applied(redis_url, customers, args.events // args.customers))
        report["decide"] = []
        for i, rate in enumerate(rates):
            log(f"decide: {rate}/s for {args.seconds:.0f} s")
            result = run_load({"kind": "decide", "url": url, "customers": customers,
                               "client": args.client, "rate": rate, "seconds": args.seconds,
                               "slot": args.slot, "seed": i}, [api.pid, worker.pid],
                              limit_s=args.seconds + DRAIN_S + 60)
            report["decide"].append(result)
            log(f"  p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    finally:
        for proc in (api, worker):
            proc.terminate()
        for proc in (api, worker):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(redis_db(redis_url, flush=True))
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    ev = report["events"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Redis "
             f"{m['redis']}, Kafka {m['kafka_local_stack']}; load average at start "
             f"{m['load_average']}",
             f"events: {ev['events_per_s']:,.0f} events/s accepted ({ev['accepted']:,} of "
             f"{ev['events']:,} in {ev['seconds']:.1f} s, {ev['requests']} requests, statuses "
             f"{ev['statuses']}); API cores {ev['cores']['processes_cores']}",
             "", "decide  requests  p50 ms  p99 ms  max ms  server p99  fallback  errors  "
             "cores (API+worker / client / machine)"]
    for d in report["decide"]:
        c = d["cores"]
        lines.append(f"{d['rate']:>5}/s  {d['requests']:>8}  {d['p50_ms']:>6.1f}  "
                     f"{d['p99_ms']:>6.1f}  {d['max_ms']:>6.1f}  {d['server_p99_ms']:>8} ms  "
                     f"{d['fallback']:>8}  {d['errors'] + d['unanswered']:>6}  "
                     f"{c['processes_cores']} / {d['client_cores']} / "
                     f"{c['machine_busy_cores']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
