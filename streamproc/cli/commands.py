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
from streamproc.errors import StreamprocError
from streamproc.settings import ENV_PREFIX, SETTING_DOCS, Settings

EPILOG = """\
First run:  streamproc stack up && streamproc worker   (and, in another shell,
            streamproc simulate --customers 1000 --rate 200 --duration 60)
Settings:   STREAMPROC_* environment variables; `streamproc settings` lists them.
"""


def _cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.stack import stack_down, stack_status, stack_up

    if args.action == "up":
        print(stack_up(settings).render())
    elif args.action == "down":
        stack_down(settings)
    else:
        status = stack_status(settings)
        print(status.render())
        return 0 if status.running else 3
    return 0


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.stack import ensure_topics
    from streamproc.worker.preflight import check_dependencies

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
    from streamproc.worker.app import create_app, run_worker  # seconds to import: after the checks
    from streamproc.worker.lifecycle import Lifecycle

    lifecycle = Lifecycle()
    app = create_app(settings, lifecycle=lifecycle)
    json_logs: dict[str, Any] = {}
    if settings.log_format == "json":
        from streamproc.logs import worker_logging_config

        worker_id: str = app.streamproc_worker_id  # type: ignore[attr-defined]
        json_logs["logging_config"] = worker_logging_config(settings.log_level, worker_id)
    run_worker(app, settings, lifecycle, **json_logs)
    return 0


def _cmd_learner(settings: Settings, args: argparse.Namespace) -> int:
    settings.validate()
    if not settings.model_secret:
        print("streamproc learner: STREAMPROC_MODEL_SECRET is not set, so there is nothing to do "
              "here: a learner of its own hands its models to the workers as signed snapshots, "
              "which need the secret (the same on the workers). Without it every worker runs "
              "the learner itself.", file=sys.stderr)
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
    from streamproc.worker.app import serve_learner, tune_gc

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
    await serve_learner(settings, stop=stop)
    logging.getLogger(__name__).info("learner stopped")


def _cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.simulator import run_simulation

    asyncio.run(  # prints its own progress and summary
        run_simulation(
            settings,
            customers=args.customers,
            rate=args.rate,
            duration=args.duration,
            seed=args.seed,
            max_events=args.max_events,
        )
    )
    return 0


async def _read_profile(settings: Settings, customer_id: str) -> dict[str, Any] | None:
    from streamproc.state.keys import validate_customer_id
    from streamproc.state.store import RedisStore

    validate_customer_id(customer_id)
    store = RedisStore.from_url(settings.redis_url)
    try:
        found = await store.read_profile(customer_id)
        if found is not None:  # everything stored about the customer: expired ones too
            from streamproc.decisions.latest import RedisLatest

            found["latest_decisions"] = await RedisLatest(store.client).read(customer_id, 0)
        return found
    finally:
        await store.close()


def _cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    import redis.exceptions

    try:
        found = asyncio.run(_read_profile(settings, args.customer_id))
    except redis.exceptions.ConnectionError as exc:
        raise StreamprocError(
            f"cannot reach Redis at {settings.redis_url} ({exc}); is the stack up? "
            "Run `streamproc stack up` or set STREAMPROC_REDIS_URL"
        ) from None
    if found is None:
        print(f"streamproc: no profile stored for customer {args.customer_id!r}", file=sys.stderr)
        return 1
    shown = {"customer_id": args.customer_id, **found}
    print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _forget(settings: Settings, customer_id: str) -> int:
    import time
    import uuid

    from aiokafka import AIOKafkaProducer

    from streamproc.learning.observations import erase_record
    from streamproc.state.keys import validate_customer_id
    from streamproc.state.store import RedisStore

    validate_customer_id(customer_id)
    store = RedisStore.from_url(settings.redis_url)
    try:
        deleted = await store.erase(customer_id)
    finally:
        await store.close()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        key = customer_id.encode()
        for topic in (settings.topics.decisions, settings.topics.segments):
            await producer.send_and_wait(topic, None, key=key)
        # The learner forgets the customer's pending moments and purchases.
        now_ms = time.time_ns() // 1_000_000
        await producer.send_and_wait(settings.topics.learning, orjson.dumps(erase_record(
            customer_id, f"forget-{uuid.uuid4()}", now_ms, None)), key=key)
    finally:
        await producer.stop()
    return deleted


def _cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    import redis.exceptions
    from aiokafka.errors import KafkaError

    try:
        deleted = asyncio.run(_forget(settings, args.customer_id))
    except redis.exceptions.ConnectionError as exc:
        raise StreamprocError(f"cannot reach Redis at {settings.redis_url} ({exc}); "
                              "run `streamproc stack up` or set STREAMPROC_REDIS_URL") from None
    except KafkaError as exc:
        raise StreamprocError(f"erased from Redis, but the tombstones could not be sent to "
                              f"Kafka at {settings.kafka_bootstrap} ({exc}): run forget again "
                              "when Kafka is back") from None
    print(f"forgot {args.customer_id}: {deleted} Redis key(s) deleted; tombstones sent to "
          f"{settings.topics.decisions} and {settings.topics.segments}, and the learner told "
          f"on {settings.topics.learning}")
    return 0


def _cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.tail import tail_topic

    topic = getattr(settings.topics, args.topic)
    try:
        asyncio.run(tail_topic(settings, topic, args.topic, from_beginning=args.from_beginning,
                               limit=args.max, customer=args.customer, raw=args.json))
    except KeyboardInterrupt:
        pass
    return 0


async def _read_snapshot(settings: Settings) -> bytes | None:
    import redis.asyncio as aioredis

    from streamproc.learning.modelstore import RedisModelStore

    client = aioredis.from_url(settings.redis_url, decode_responses=False)
    try:
        return await RedisModelStore(client, settings.app_id).get("serving")
    finally:
        await client.aclose()


def _cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    import redis.exceptions

    from streamproc.learning.scorer import snapshot_stats
    from streamproc.state.keys import model_key

    if not settings.model_secret:
        raise StreamprocError("STREAMPROC_MODEL_SECRET is not set: it is needed to verify the "
                              "model snapshot (workers without it write none)")
    try:
        blob = asyncio.run(_read_snapshot(settings))
    except redis.exceptions.ConnectionError as exc:
        raise StreamprocError(
            f"cannot reach Redis at {settings.redis_url} ({exc}); is the stack up? "
            "Run `streamproc stack up` or set STREAMPROC_REDIS_URL"
        ) from None
    key = model_key(settings.app_id, "serving")
    if blob is None:
        print(f"streamproc: no model snapshot in Redis ({key} at {settings.redis_url}): the "
              "learner writes one every STREAMPROC_MODEL_SNAPSHOT_SECONDS once it has learnt, "
              "when STREAMPROC_MODEL_SECRET is set (and STREAMPROC_APP_ID names the workers' "
              "app)", file=sys.stderr)
        return 1
    stats = snapshot_stats(blob, settings.model_secret.encode())  # SnapshotError: exit 2
    print(orjson.dumps({"key": key, "intent": stats}, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    width = max(len(ENV_PREFIX + name) for name, _, _ in SETTING_DOCS)
    for name, default, doc in SETTING_DOCS:
        shown = default or ("from the prefix" if name.startswith("TOPIC_") else "none")
        print(f"{ENV_PREFIX + name:<{width}}  {doc} (default: {shown})")
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
    # A ConfigError lists every problem with its place; main() prints it and exits 2.
    print(describe(load_catalogue(path, activity_days=settings.activity_days), path))
    return 0


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.benchmark import Bench, BenchOptions, render

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchOptions)
             if getattr(args, f.name) not in (None, False)}
    options = BenchOptions.quick(**given) if args.quick else BenchOptions(**given)
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
    p.set_defaults(func=_cmd_stack)

    p = sub.add_parser("worker", help="run a stream-processing worker (Ctrl-C stops it)",
                       description="Consume the input topics, keep every customer's profile "
                       "in Redis and publish decisions. Start several to share the partitions; "
                       "each needs its own --web-port, or none (the default).")
    p.add_argument("--web-port", type=int, help="serve /metrics, /livez and /readyz on this port "
                   "(default: STREAMPROC_WEB_PORT, 0 = off)")
    p.add_argument("--log-level", choices=["debug", "info", "warn", "error"],
                   help="default: STREAMPROC_LOG_LEVEL or info")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("learner", help="run the learner as its own process (Ctrl-C stops it)",
                       description="Label the workers' observations from the learning topic, "
                       "learn the models and publish them as signed snapshots that every "
                       "worker reloads. Needs STREAMPROC_MODEL_SECRET (the workers' one); run "
                       "the workers with STREAMPROC_LEARNER=off. Several learners may run: one "
                       "learns, the others stand by and take over when it stops.")
    p.set_defaults(func=_cmd_learner)

    p = sub.add_parser("simulate", help="produce realistic customer traffic to Kafka",
                       description="Simulated customers with personas browse, search, fill "
                       "carts and buy; events go to the input topics at the given rate.")
    p.add_argument("--customers", type=_positive_int, default=1000, help="default: 1000")
    p.add_argument("--rate", type=_positive_float, default=200.0,
                   help="events per second (default: 200)")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="seconds to run (default: until Ctrl-C or --max-events)")
    p.add_argument("--max-events", type=_positive_int, default=None,
                   help="stop after this many events")
    p.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("profile", help="print everything stored about a customer, as JSON",
                       description="Print everything stored about the customer (right of "
                       "access): the profile, its version, the decisions and segment moves "
                       "of its last batch, and the latest decision per slot, from Redis. "
                       "Exits 1 when nothing is stored.")
    p.add_argument("customer_id")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("forget", help="erase everything stored about a customer",
                       description="Right to erasure: delete every Redis key of the customer "
                       "and its counts in the RFM histograms, and publish a tombstone (null "
                       "value) for the customer's key on the decisions and segments topics, "
                       "and tell the learner (learning topic) to forget the customer's "
                       "pending moments and purchases. An `erase` event on the profiles topic "
                       "does the same from the stream.")
    p.add_argument("customer_id")
    p.set_defaults(func=_cmd_forget)

    p = sub.add_parser("tail", help="follow an output topic live (decisions by default)",
                       description="Pretty-print records of an output topic as they arrive, "
                       "until Ctrl-C.")
    p.add_argument("topic", nargs="?", default="decisions",
                   choices=["decisions", "segments", "deadletter"])
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest record instead of new ones only")
    p.add_argument("--max", type=_positive_int, default=None, help="stop after N records")
    p.add_argument("--customer", help="only this customer's records")
    p.add_argument("--json", action="store_true", help="print raw JSON, one record a line")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("models", help="print the latest intent model snapshot's figures",
                       description="Read the intent model's snapshot from Redis, verify its "
                       "signature with STREAMPROC_MODEL_SECRET and print, as JSON, its version, "
                       "labels learnt (n, positives, negatives), progressive-validation ROC AUC "
                       "and log loss, drift detections, and the learner's state (learning "
                       "topic offset, pending labels, duplicates). Exits 1 when there is no "
                       "snapshot, "
                       "2 when the secret is missing or does not match.")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("settings", help="list the STREAMPROC_* settings and their defaults")
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
                       "experiments. Exits 2 listing every problem, each with its place, when "
                       "it is not valid.")
    p.add_argument("file", nargs="?", help="the catalogue to check (default: "
                   "STREAMPROC_CATALOGUE, else the shipped schemas/examples/catalogue.yaml)")
    p.set_defaults(func=_cmd_catalogue)

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
                   "latency (default: all)")
    p.add_argument("--loads", type=_int_list, metavar="LIST",
                   help="offered loads of the latency stage, events/s (default: 1000,5000)")
    p.add_argument("--latency-seconds", type=_positive_float,
                   help="seconds of traffic at each load (default: 15)")
    p.add_argument("--warmup-seconds", type=float,
                   help="first seconds of each load left out of the percentiles (default: 3)")
    p.add_argument("--redis-db", type=int, help="Redis database of the bench, on the host of "
                   "STREAMPROC_REDIS_URL; must be empty (default: 13)")
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
                   help="tiny sizes (3000 events, loads 200,1000 for 3 s): a smoke test, "
                   "not figures")
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

