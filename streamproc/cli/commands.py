"""The ``streamproc`` command.

Settings come from ``STREAMPROC_*`` environment variables (``streamproc settings`` lists them);
a few options override them per command. Heavy modules are imported inside the commands so that
``--help`` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from streamproc import __version__
from streamproc.errors import ConfigError, StreamprocError, masked_url, redis_unreachable
from streamproc.kafka_options import kafka_options
from streamproc.settings import ENV_PREFIX, SETTING_DOCS, Settings

EPILOG = """\
First run:  streamproc stack up && streamproc worker   (and, in another shell,
            streamproc simulate --customers 1000 --rate 200 --duration 60)
Settings:   STREAMPROC_* environment variables; `streamproc settings` lists them.
"""


def _cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.stack import stack_down, stack_status, stack_up

    if args.kafka_brokers is not None:
        settings = dataclasses.replace(settings, kafka_brokers=args.kafka_brokers)
    if args.action == "up":
        print(stack_up(settings, redis_cluster_primaries=args.redis_cluster or 0).render())
    elif args.action == "down":
        stack_down(settings)
    else:
        status = stack_status(settings)
        print(status.render())
        return 0 if status.running else 3
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.stack import ensure_topics
    from streamproc.worker.preflight import check_dependencies, check_topic_configs

    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    if args.log_level:
        overrides["log_level"] = args.log_level
    settings = dataclasses.replace(settings, **overrides)
    settings.validate()
    # Redis and Kafka answer before the worker joins the group: one without them would take
    # partitions it cannot process (STREAMPROC_STARTUP_TIMEOUT_S bounds the wait).
    asyncio.run(check_dependencies(settings))
    created = asyncio.run(ensure_topics(settings))
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    # Erasure's tombstones must reach the decisions, segments and dead-letter topics.
    asyncio.run(check_topic_configs(settings))
    from streamproc.worker.app import create_app, run_worker  # seconds to import: after the checks
    from streamproc.worker.lifecycle import Lifecycle

    lifecycle = Lifecycle()
    worker = create_app(settings, lifecycle=lifecycle)
    json_logs: dict[str, Any] = {}
    if settings.log_format == "json":
        from streamproc.logs import worker_logging_config

        json_logs["logging_config"] = worker_logging_config(settings.log_level, worker.worker_id)
    run_worker(worker.app, settings, lifecycle, **json_logs)
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.api import run

    overrides = {k: v for k, v in (("api_host", args.host), ("api_port", args.port)) if v}
    settings = dataclasses.replace(settings, **overrides)
    settings.validate()
    level = {"warn": "WARNING", "crit": "CRITICAL"}.get(settings.log_level,
                                                        settings.log_level.upper())
    logging.getLogger().setLevel(level)
    run(settings)
    return 0


def _cmd_learner(settings: Settings, args: argparse.Namespace) -> int:
    if args.web_port is not None:
        settings = dataclasses.replace(settings, learner_web_port=args.web_port)
    settings.validate()
    if not settings.model_secret:
        print("streamproc learner: STREAMPROC_MODEL_SECRET is not set (nor a local stack "
              "secret), so there is nothing to do here: a learner of its own hands its models "
              "to the workers as signed snapshots, which need the secret (the same on the "
              "workers). Without it every worker runs the learner itself. To run one: "
              f"{settings.model_secret_hint}.", file=sys.stderr)
        return 0
    level = {"warn": "WARNING", "crit": "CRITICAL"}.get(settings.log_level,
                                                        settings.log_level.upper())
    logging.getLogger().setLevel(level)
    asyncio.run(_learn(settings))
    return 0


async def _learn(settings: Settings) -> None:
    """The learner until SIGTERM or Ctrl-C, which write its last snapshot before it exits."""
    import signal

    from streamproc.stack import ensure_topics
    from streamproc.worker.app import serve_learner_process, tune_gc

    created = await ensure_topics(settings)
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    tune_gc()
    # A signal sets ``stop``: the learner leaves its poll loop within a second and writes its
    # last snapshot. (Cancelling the task instead was sometimes swallowed inside the Kafka
    # client, and the learner ran on.)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_learner_process(settings, stop)
    logging.getLogger(__name__).info("learner stopped")


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.simulator import run_simulation

    if args.topic_prefix is not None and not args.accelerated:
        raise StreamprocError("--topic-prefix is for --accelerated runs; a wall-clock run "
                              "writes to the stack's topics (STREAMPROC_TOPIC_PREFIX)")
    extra: dict[str, Any] = {}
    if args.topic_prefix is not None:
        extra["topic_prefix"] = args.topic_prefix
    asyncio.run(  # prints its own progress and summary
        run_simulation(
            settings,
            customers=args.customers,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed,
            max_events=args.max_events,
            accelerated=args.accelerated,
            slot_requests=not args.no_slot_requests,
            respond=not args.no_feedback,
            **extra,
        )
    )
    return 0


async def _read_profile(settings: Settings, customer_id: str) -> dict[str, Any] | None:
    from streamproc.state.keys import validate_customer_id
    from streamproc.state.store import RedisStore

    validate_customer_id(customer_id)
    store = RedisStore.from_settings(settings)
    try:
        found = await store.read_profile(customer_id)
        if found is not None:  # everything stored about the customer: expired ones too
            from streamproc.decisions.latest import RedisLatest

            found["latest_decisions"] = await RedisLatest(store.client).read(customer_id, 0)
        return found
    finally:
        await store.close()


def _cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE

    try:
        found = asyncio.run(_read_profile(settings, args.customer_id))
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc) from None
    if found is None:
        print(f"streamproc: no profile stored for customer {args.customer_id!r}", file=sys.stderr)
        return 1
    shown = {"customer_id": args.customer_id, **found}
    if args.human:
        import time

        from streamproc.state.readable import human

        shown = human(shown, time.time_ns() // 1_000_000)
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _forget(settings: Settings, customer_id: str) -> int:
    """Erase the customer as a worker erases on an ``erase`` event (the same function), and
    publish what the worker would: tombstones and the learner's erase observation."""
    import time
    import uuid

    from streamproc.processor import BatchResult, erase_customer
    from streamproc.state.keys import validate_customer_id
    from streamproc.state.store import RedisStore
    from streamproc.worker.emitter import KafkaEmitter

    validate_customer_id(customer_id)
    erasure = BatchResult()
    store = RedisStore.from_settings(settings)
    try:
        deleted = await erase_customer(store, customer_id, f"forget-{uuid.uuid4()}",
                                       time.time_ns() // 1_000_000, None, erasure,
                                       suppress_ms=settings.erasure_suppress_days * 86_400_000)
    finally:
        await store.close()
    emitter = KafkaEmitter(settings)
    try:
        await emitter.emit(erasure)
    finally:
        await emitter.close()
    return deleted


def _cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE

    try:
        deleted = asyncio.run(_forget(settings, args.customer_id))
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc) from None
    except KafkaError as exc:
        raise StreamprocError(f"erased from Redis, but the tombstones could not be sent to "
                              f"Kafka at {settings.kafka_bootstrap} ({exc}): run forget again "
                              "when Kafka is back") from None
    print(f"forgot {args.customer_id}: {deleted} Redis key(s) deleted; tombstones sent to "
          f"{settings.topics.decisions}, {settings.topics.segments} and "
          f"{settings.topics.deadletter}, and the learner told "
          f"on {settings.topics.learning}")
    return 0


def _cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.tail import tail_topic

    topic = getattr(settings.topics, args.topic)
    try:
        asyncio.run(tail_topic(settings, topic, args.topic, from_beginning=args.from_beginning,
                               limit=args.max, customer=args.customer, raw=args.json,
                               why=args.why))
    except KeyboardInterrupt:
        pass
    return 0


async def _read_snapshot(settings: Settings) -> bytes | None:
    from streamproc.learning.modelstore import RedisModelStore
    from streamproc.redis_options import redis_client

    client = redis_client(settings, decode_responses=False)
    try:
        return await RedisModelStore(client, settings.app_id).get("serving")
    finally:
        await client.aclose()


def _cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.learning.scorer import snapshot_stats
    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
    from streamproc.state.keys import model_key

    if not settings.model_secret:
        raise StreamprocError("STREAMPROC_MODEL_SECRET is not set: it is needed to verify the "
                              "model snapshot (workers without it write none); "
                              f"{settings.model_secret_hint}")
    try:
        blob = asyncio.run(_read_snapshot(settings))
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc) from None
    key = model_key(settings.app_id, "serving")
    if blob is None:
        print(f"streamproc: no model snapshot in Redis ({key} at "
              f"{masked_url(settings.redis_url)}): the "
              "learner writes one every STREAMPROC_MODEL_SNAPSHOT_SECONDS once it has learnt, "
              "when STREAMPROC_MODEL_SECRET is set (and STREAMPROC_APP_ID names the workers' "
              "app)", file=sys.stderr)
        return 1
    stats = snapshot_stats(blob, settings.model_secret.encode())  # SnapshotError: exit 2
    shown: dict[str, Any] = {"key": key, "intent": stats}
    offset = stats["learner"].get("offset")
    if isinstance(offset, int):
        shown["learner_lag"] = asyncio.run(_learner_lag(settings, offset))
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _read_for_recs(settings: Settings, customer_id: str
                         ) -> tuple[dict[str, Any] | None, bytes | None]:
    """The customer's stored profile (None: none) and the serving snapshot (None: none)."""
    found = await _read_profile(settings, customer_id)
    return (None if found is None else found["profile"]), await _read_snapshot(settings)


def _cmd_recommend(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from streamproc.learning.scorer import load_served
    from streamproc.models.ranking import Recommender
    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
    from streamproc.state.keys import model_key
    from streamproc.state.profile import new_profile, upgrade_profile

    if not settings.model_secret:
        raise StreamprocError("STREAMPROC_MODEL_SECRET is not set: it is needed to verify the "
                              "model snapshot that holds the item relations; "
                              f"{settings.model_secret_hint}")
    try:
        doc, blob = asyncio.run(_read_for_recs(settings, args.customer_id))
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc) from None
    if blob is None:
        print(f"streamproc: no model snapshot in Redis ({model_key(settings.app_id, 'serving')} "
              f"at {masked_url(settings.redis_url)}): nothing learnt to recommend with yet; "
              "the learner writes one every STREAMPROC_MODEL_SNAPSHOT_SECONDS once the workers "
              "have seen traffic", file=sys.stderr)
        return 1
    version, served = load_served(blob, settings.model_secret.encode())  # SnapshotError: exit 2
    relations = getattr(served, "relations", None)
    recommender = Recommender.from_settings(settings, relations)
    profile = upgrade_profile(doc) if doc is not None else new_profile(args.customer_id)
    now_ms = max(int(time.time() * 1000), profile.get("last_seen_ms") or 0)
    products = recommender.recommend(profile, now_ms, args.n)
    print(orjson.dumps({"customer_id": args.customer_id, "known": doc is not None,
                        "model_version": version, "products": products},
                       option=orjson.OPT_INDENT_2).decode())
    return 0


async def _learner_lag(settings: Settings, offset: int) -> int | None:
    """Records of the learning topic after the snapshot's offset, now: how far the learner is
    behind the topic's end, at most what it read since that snapshot more (None, with a note,
    when Kafka does not answer)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    tp = TopicPartition(settings.topics.learning, 0)
    consumer = AIOKafkaConsumer(**kafka_options(settings),
                                enable_auto_commit=False, request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(15):
            await consumer.start()
            end: int = (await consumer.end_offsets([tp]))[tp]
    except (KafkaError, TimeoutError, OSError) as exc:
        print(f"streamproc: the learner's lag is unknown: Kafka at {settings.kafka_bootstrap} "
              f"does not answer ({type(exc).__name__})", file=sys.stderr)
        return None
    finally:
        await consumer.stop()
    return max(0, end - offset - 1)


def _cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.settings import FROM_DEFAULT, shown_values

    rows = shown_values(settings)
    if args.json:
        print(orjson.dumps({name: {"value": value, "source": source}
                            for name, value, source in rows},
                           option=orjson.OPT_INDENT_2).decode())
        return 0
    docs = {ENV_PREFIX + name: (default, doc) for name, default, doc in SETTING_DOCS}
    width = max(len(name) for name, _, _ in rows)
    value_width = min(40, max(len(value or "(empty)") for _, value, _ in rows))
    for name, value, source in rows:
        default, doc = docs[name]
        print(f"{name:<{width}}  {value or '(empty)':<{value_width}}  [{source}]")
        if args.verbose:
            shown = default or ("from the prefix" if name.startswith(ENV_PREFIX + "TOPIC_")
                                else "none")
            print(f"{'':<{width}}    {doc} (default: {shown})")
    changed = sum(source != FROM_DEFAULT for _, _, source in rows)
    print(f"\n{changed} of {len(rows)} settings not from their default; --verbose describes "
          "each", file=sys.stderr)
    from streamproc.settings import FILE_SUFFIX, FROM_ENVIRONMENT, SECRET_FILES

    print("secrets can also be read from files: " + ", ".join(
        ENV_PREFIX + name + FILE_SUFFIX for name in SECRET_FILES))
    source = settings.sources.get("MODEL_SECRET", FROM_DEFAULT)
    secret_source = ("STREAMPROC_MODEL_SECRET" if source == FROM_ENVIRONMENT
                     else source if settings.model_secret and not settings.model_secret_file
                     else str(settings.model_secret_file or "none (no snapshots)"))
    print(f"model secret in use: {secret_source}")
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.worker.status import collect_status

    status = asyncio.run(collect_status(settings))
    if args.json:
        print(orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(status.render())
    return 0 if status.alive else 3


def _cmd_catalogue(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.decisions.catalogue import default_catalogue_path, describe, load_catalogue

    path = args.file or settings.catalogue or default_catalogue_path()
    try:
        catalogue = load_catalogue(path, activity_days=settings.activity_days)
    except ConfigError as exc:  # every problem, each with its line and id
        print(exc)
        return 1
    print(describe(catalogue, path))
    return 0


def _cmd_rules(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.segments.rulefile import RuleFile
    from streamproc.segments.sensitive import describe_uses

    path = args.file or settings.segment_rules
    if not path:
        raise StreamprocError("give a rules FILE or set STREAMPROC_SEGMENT_RULES (an example: "
                              "schemas/examples/segment-rules.yaml)")
    try:  # the worker's own loader: what passes here passes at the worker's start
        rules = RuleFile(path, activity_days=settings.activity_days).current()
    except ConfigError as exc:  # every problem, each with its line and rule name
        print(exc)
        return 1
    print(f"{path}: valid, {len(rules)} custom segment{'' if len(rules) == 1 else 's'} "
          f"(segmentations custom.<name>; windows up to STREAMPROC_ACTIVITY_DAYS="
          f"{settings.activity_days} days)")
    width = max((len(r.name) for r in rules.rules), default=0)
    for rule in rules.rules:
        print(f"  {rule.name:<{width}}  {rule.description}".rstrip())
    print(describe_uses(rules.sensitive_uses))
    return 0


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.benchmark import Bench, BenchOptions, render

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchOptions)
             if getattr(args, f.name) not in (None, False)}
    options = BenchOptions.quick_run(**given) if args.quick else BenchOptions(**given)
    try:
        report = asyncio.run(Bench(settings, options, os.environ, sys.stderr).run())
    except asyncio.CancelledError:  # SIGTERM: the bench has stopped its workers and cleaned up
        print("streamproc: bench stopped", file=sys.stderr)
        return 143
    print(render(report))
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Real-time personalisation on Kafka, Redis and River: live customer "
        "profiles, segments and next-best-action decisions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamproc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stack", help="start, stop or inspect the local Kafka and Redis",
                       description="The local stack: a real Apache Kafka broker (KRaft, from "
                       "Maven Central, run with Java 17+) and a real Redis server, with data "
                       "and logs under STREAMPROC_STACK_DIR (default .stack/). `up` is "
                       "idempotent and creates the topics; `down` stops only what `up` "
                       "started; `status` exits 3 when something is not running.")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--redis-cluster", type=int, metavar="N",
                   help="`up` also starts a local Redis Cluster of N primaries with one replica "
                   "each (2N redis-server processes on ports from "
                   "STREAMPROC_REDIS_CLUSTER_PORT); `down` stops it with the rest")
    p.add_argument("--kafka-brokers", type=int, choices=range(1, 10), metavar="N",
                   help="run N Kafka brokers (KRaft, each also a controller; topics get 3 "
                   "replicas and min.insync.replicas 2 from 3 brokers on); node n >= 2 listens "
                   "on STREAMPROC_KAFKA_EXTRA_PORT + 2(n-2) (default: STREAMPROC_KAFKA_BROKERS, "
                   "1)")
    p.set_defaults(func=_cmd_stack)

    p = sub.add_parser("worker", help="run a stream-processing worker (Ctrl-C stops it)",
                       description="Consume the input topics, keep every customer's profile "
                       "in Redis and publish decisions. Start several to share the partitions; "
                       "each needs its own --web-port, or none (the default).")
    p.add_argument("--web-port", type=int, help="serve /metrics, /livez and /readyz on this port "
                   "(default: STREAMPROC_WEB_PORT, 0 = off)")
    p.add_argument("--log-level", type=_log_level, choices=["debug", "info", "warn", "error"],
                   help="debug, info, warn (or warning) or error, any case (default: "
                   "STREAMPROC_LOG_LEVEL or info)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("learner", help="run the learner as its own process (Ctrl-C stops it)",
                       description="Label the workers' observations from the learning topic, "
                       "learn the models and publish them as signed snapshots that every "
                       "worker reloads. Needs STREAMPROC_MODEL_SECRET (the workers' one); run "
                       "the workers with STREAMPROC_LEARNER=off. Several learners may run: one "
                       "learns, the others stand by and take over when it stops.")
    p.add_argument("--web-port", type=int, help="serve /metrics and /livez on this port "
                   "(default: STREAMPROC_LEARNER_WEB_PORT, 0 = off)")
    p.set_defaults(func=_cmd_learner)

    p = sub.add_parser("serve", help="run the HTTP API: events in, decisions out (Ctrl-C stops it)",
                       description="Serve POST /v1/events, GET|POST /v1/decide, POST "
                       "/v1/feedback, GET /v1/decisions/{id} and, with the admin token, "
                       "GET|DELETE /v1/customers/{id} (docs/api.md). Stateless: run more of it "
                       "to scale.")
    p.add_argument("--host", help="address to bind (default: STREAMPROC_API_HOST)")
    p.add_argument("--port", type=_positive_int, help="port (default: STREAMPROC_API_PORT)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("simulate", help="produce realistic customer traffic to Kafka",
                       description="The shop's product feed (every product, a few out of "
                       "stock) goes to the products topic first, so recommendations skip what "
                       "is out of stock. Then simulated customers with personas browse, "
                       "search, fill "
                       "carts and buy; events go to the input topics at the given rate, "
                       "stamped with the wall-clock time they are sent at. Their pages ask "
                       "for their slots (slot_request: homepage_hero, product_recs, "
                       "cart_drawer), and the customers answer the decisions about them with "
                       "feedback (impression, click, conversion; as `streamproc respond`), so "
                       "a worker's bandit learns while it runs.",
                       epilog="Load tests: --accelerated keeps the simulator's own, faster "
                       "clock (a simulated day a minute or so) and so writes to topics of its "
                       "own (streamproc-accelerated.*, created when missing), never to the "
                       "stack's: event time hours ahead of the clock would fire the stack's "
                       "timers and close its bandit's waits early. `streamproc bench` uses "
                       "topics of its own too.")
    p.add_argument("--customers", type=_positive_int, default=1000, help="default: 1000")
    p.add_argument("--rate", type=_positive_float, default=200.0,
                   help="events per second (default: 200)")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="seconds to run (default: until Ctrl-C or --max-events)")
    p.add_argument("--max-events", type=_positive_int, default=None,
                   help="stop after this many events")
    p.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    p.add_argument("--accelerated", action="store_true",
                   help="event time runs ahead of the clock, to topics of its own (see below)")
    p.add_argument("--topic-prefix", metavar="PREFIX",
                   help="topic prefix of an --accelerated run (default: "
                   "streamproc-accelerated.); never the stack's")
    p.add_argument("--no-slot-requests", action="store_true",
                   help="pages do not ask for their slots")
    p.add_argument("--no-feedback", action="store_true",
                   help="do not answer the decisions with feedback")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("profile", help="print everything stored about a customer, as JSON",
                       description="Print everything stored about the customer (right of "
                       "access): the profile, its version, the decisions and segment moves "
                       "of its last batch, and the latest decision per slot, from Redis. "
                       "Times are epoch milliseconds and days epoch day numbers, as stored; "
                       "--human shows them as ISO 8601 UTC times and dates, each "
                       "attribute's source and age in words, and the compact lists with named "
                       "fields. "
                       "Exits 1 when nothing is stored.")
    p.add_argument("customer_id")
    p.add_argument("--human", action="store_true",
                   help="times as 2026-03-01T10:03:00.000Z and days as 2026-03-01 instead of "
                   "epoch milliseconds and day numbers, attribute sources as 'declared, 3 days "
                   "ago (...)' instead of one-letter codes (for people; the default is for "
                   "programs)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("forget", help="erase everything stored about a customer",
                       description="Right to erasure: delete every Redis key of the customer "
                       "and its counts in the RFM histograms, and publish a tombstone (null "
                       "value) for the customer's key on the decisions, segments and "
                       "dead-letter topics (compacted), record the erasure so that the "
                       "customer's earlier events read later do not profile them again "
                       "(STREAMPROC_ERASURE_SUPPRESS_DAYS), and tell the learner (learning "
                       "topic) to forget the customer's pending moments and purchases. An "
                       "`erase` event on the profiles topic does the same from the stream.")
    p.add_argument("customer_id")
    p.set_defaults(func=_cmd_forget)

    p = sub.add_parser("tail", help="follow an output topic live (decisions by default)",
                       description="Print records of an output topic as they arrive, until "
                       "Ctrl-C. A decision is one line: time (UTC), customer, slot or channel, "
                       "action, policy/experiment arm, propensity and the deciding reason, "
                       "shortened; --why adds all its reasons, --json prints the records.")
    p.add_argument("topic", nargs="?", default="decisions",
                   choices=["decisions", "segments", "deadletter"])
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest record instead of new ones only")
    p.add_argument("--max", type=_positive_int, default=None, help="stop after N records")
    p.add_argument("--customer", help="only this customer's records")
    p.add_argument("--json", action="store_true",
                   help="print each record's JSON, one a line (for programs)")
    p.add_argument("--why", action="store_true",
                   help="under each decision, every reason behind it, one a line")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("models", help="print the latest intent model snapshot's figures",
                       description="Read the intent model's snapshot from Redis, verify its "
                       "signature with STREAMPROC_MODEL_SECRET and print, as JSON, its version, "
                       "labels learnt (n, positives, negatives), progressive-validation ROC AUC "
                       "and log loss, drift detections, the learner's state (learning "
                       "topic offset, pending labels, duplicates), and learner_lag: the "
                       "learning topic's records after the snapshot's offset, now (how far "
                       "the learner is behind, at most). The secret is STREAMPROC_MODEL_SECRET, "
                       "or the local stack's (STREAMPROC_STACK_DIR/model-secret). Exits 1 when "
                       "there is no snapshot, 2 when the secret is missing or does not match.")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("recommend", help="print a customer's recommended products, as JSON",
                       description="Rank products for the customer as a recommendation "
                       "decision would now: related products (viewed together, bought "
                       "together, viewed then bought) of what they recently viewed, carted and "
                       "bought, popular products of their favourite categories, then the most "
                       "popular; out of stock, sensitive (STREAMPROC_RECS_SENSITIVE_CATEGORIES) "
                       "and already bought products left out. Reads the profile and the signed "
                       "model snapshot from Redis; prints the ids in order, each with its "
                       "reason (a customer with nothing stored, \"known\": false, gets the "
                       "popular ones). Exits 1 when there is no snapshot yet, 2 when "
                       "STREAMPROC_MODEL_SECRET is missing or does not match.")
    p.add_argument("customer_id")
    p.add_argument("--n", type=_positive_int, default=10, help="how many products (default 10)")
    p.set_defaults(func=_cmd_recommend)

    p = sub.add_parser("settings", help="show the STREAMPROC_* settings in force and their source",
                       description="Every STREAMPROC_* setting with the value in force and where "
                       "it came from: [environment], [default] or, for the model secret, the file "
                       "`streamproc stack up` made in STREAMPROC_STACK_DIR/model-secret (mode "
                       "0600, made once, never overwritten) when STREAMPROC_MODEL_SECRET is unset "
                       "or empty; a value set explicitly always wins. The model secret is masked, "
                       "and so is a password in the Redis URL. An unknown STREAMPROC_ variable "
                       "(a typo) is an error naming the nearest known setting; an invalid "
                       "value is an error saying what is expected (exit 2).")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also describe each setting and give its default")
    p.add_argument("--json", action="store_true",
                   help="print {name: {value, source}} as JSON")
    p.set_defaults(func=_cmd_settings)

    from streamproc.cli.decisions import add_commands as add_decision_commands

    add_decision_commands(sub)  # evaluate, report, bandit, respond

    p = sub.add_parser("status", help="workers, partitions, consumer lag and errors at a glance",
                       description="The workers of STREAMPROC_APP_ID (from the heartbeats they "
                       "write to Redis every 5 s: alive, or stale after 15 s of silence), the "
                       "partitions each owns, its events/s over the last minute, dead letters "
                       "and errors; then the consumer lag of every input partition (end offset "
                       "minus the group's committed offset). Exits 0 when a worker is alive, 3 "
                       "when none is, 2 when Kafka or Redis cannot be reached.")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("catalogue", help="check a decision catalogue and show what it holds",
                       description="Check a decision catalogue (YAML or JSON) as a worker "
                       "would at start, and print its slots, actions, triggers, caps and "
                       "experiments. When it is not valid, lists every problem in one pass, "
                       "each with its line, its item's id and its place "
                       "(line 47: actions[4] (id: cart_reminder).kind: ...), and exits 1.")
    p.add_argument("file", nargs="?", help="the catalogue to check (default: "
                   "STREAMPROC_CATALOGUE, else the shipped schemas/examples/catalogue.yaml)")
    p.set_defaults(func=_cmd_catalogue)

    p = sub.add_parser("rules", help="check a segment-rules file and show its segments",
                       description="Check a custom segment-rules file (YAML or JSON) exactly as "
                       "a worker does at start, with the worker's loader and "
                       "STREAMPROC_ACTIVITY_DAYS, and print its segments. When it is not valid, "
                       "lists every problem in one pass, each with its line, its rule's name "
                       "and its place (line 12: segments[2] (name: vip).when.field: ...), and "
                       "exits 1; exits 0 when it is valid.")
    p.add_argument("file", nargs="?", type=Path, help="the rules file to check (default: "
                   "STREAMPROC_SEGMENT_RULES)")
    p.set_defaults(func=_cmd_rules)

    p = sub.add_parser("bench", help="benchmark the pipeline against raw aiokafka and bare Faust",
                       description="On the real stack and the same simulated events: (1) a raw "
                       "aiokafka consumer, (2) a bare Faust app that decodes and acks, (3) the "
                       "full pipeline with one worker, then two, (4) event-to-decision latency "
                       "at fixed offered loads, beside its floor (how long the same events take "
                       "to reach the bare Faust app, and a raw consumer). Prints a table with "
                       "the ratios and the targets; --json writes every figure. Uses fresh "
                       "topics (deleted at the end) and its own, empty Redis database. Takes a "
                       "few minutes by default; see docs/benchmarks.md.")
    p.add_argument("--events", type=_positive_int, help="events for stages 1-3 (default: 100000)")
    p.add_argument("--customers", type=_positive_int,
                   help="simulated customers (default: 10000)")
    p.add_argument("--partitions", type=_positive_int,
                   help="partitions of the bench's topics (default: STREAMPROC_PARTITIONS)")
    p.add_argument("--stages", type=_name_list, metavar="LIST",
                   help="comma-separated stages to run, of raw, faust, pipeline, pipeline2, "
                   "pipeline3 (three workers), latency (default: all but pipeline3)")
    p.add_argument("--loads", type=_int_list, metavar="LIST",
                   help="offered loads of the latency stage, events/s (default: 1000,5000)")
    p.add_argument("--latency-seconds", type=_positive_float,
                   help="seconds of traffic at each load (default: 15)")
    p.add_argument("--warmup-seconds", type=float,
                   help="first seconds of each load left out of the percentiles (default: 3)")
    p.add_argument("--redis-db", type=int, help="Redis database of the bench, on the host of "
                   "STREAMPROC_REDIS_URL; must be empty (default: 13). On a Redis Cluster "
                   "(database 0 only) the bench takes the whole cluster, which must be empty")
    p.add_argument("--flush", action="store_true",
                   help="empty the Redis database first if it holds keys")
    p.add_argument("--keep-topics", action="store_true",
                   help="keep the bench's topics (default: deleted at the end)")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="also run one pipeline worker under cProfile on the first 30000 events: "
                   "stats to FILE, summary and top functions printed")
    p.add_argument("--profile-top", type=_positive_int,
                   help="functions listed from the profile (default: 25)")
    p.add_argument("--seed", type=int, help="simulator seed (default: 7)")
    p.add_argument("--learner", choices=["process", "worker"],
                   help="where the pipeline's learner runs: process (one `streamproc learner` "
                   "beside the workers, which run with STREAMPROC_LEARNER=off; the recommended "
                   "deployment) or worker (in the workers) (default: process)")
    p.add_argument("--rounds", type=_positive_int,
                   help="run stages 1-3 this many times, each round on fresh topics with the "
                   "same events, and report each stage's median round and every round's rate: "
                   "on a shared machine one run's figures can be tens of per cent off (default: 1)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (3000 events, loads 200,1000 for 3 s): a smoke test; "
                   "prints the figures without judging them against the targets")
    p.set_defaults(func=_cmd_bench)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _log_level(text: str) -> str:
    from streamproc.settings import normalise_log_level

    return normalise_log_level(text)


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(_positive_int(x.strip()) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command not in {"worker", "learner"}:
        # Our own error says what failed and what to do; aiokafka's connection noise before
        # it only repeats it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        settings = Settings.from_env()
        if settings.log_format == "json":
            from streamproc.logs import use_json

            use_json()
        return int(args.func(settings, args))
    except StreamprocError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`streamproc profile x | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0

