"""The ``streamproc evaluate`` and ``streamproc report`` commands (registered by
:mod:`streamproc.cli.commands`).

Only argparse is imported at module level, so ``streamproc --help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamproc.decisions.bandit import ThompsonChooser
    from streamproc.decisions.decision_log import DecisionLog
    from streamproc.decisions.evaluation import Policy, SamplePolicy
    from streamproc.settings import Settings

SOURCES_HELP = ("Decisions and feedback are read from the decisions and feedback topics, from "
                "the beginning to their current end (STREAMPROC_TOPIC_* settings), or from JSON "
                "Lines files (one decision record, or one feedback event, a line).")


def _add_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decisions", type=Path, metavar="FILE",
                   help="decision records as JSON Lines ('-' = stdin; default: the decisions "
                   "topic)")
    p.add_argument("--feedback", type=Path, metavar="FILE",
                   help="feedback events as JSON Lines (default: the feedback topic)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _load(settings: Settings, args: argparse.Namespace) -> DecisionLog:
    from streamproc.decisions.decision_log import load_log

    return asyncio.run(load_log(settings, args.decisions, args.feedback, progress=sys.stderr))


def _print_json(value: Any) -> None:
    import orjson

    print(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())


def read_bandit(blob: bytes, settings: Settings) -> tuple[ThompsonChooser, dict[str, Any]]:
    """The bandit of a signed snapshot: the learner's model snapshot (its ``serving`` key, which
    carries the bandit) or a bandit's own (``ThompsonChooser.snapshot``), with the current
    ``STREAMPROC_BANDIT_*`` settings; and what the learner said about it (version, rewards,
    decisions awaiting theirs; empty for a bandit's own snapshot).

    SnapshotError when the signature does not verify (nothing is unpickled then) or the
    snapshot holds no bandit."""
    from streamproc.decisions.bandit import ThompsonChooser
    from streamproc.errors import StreamprocError
    from streamproc.learning.scorer import ServedModels
    from streamproc.models.snapshot import SnapshotError, load

    if not settings.model_secret:
        raise SnapshotError("STREAMPROC_MODEL_SECRET is not set: it is needed to verify the "
                            f"bandit's snapshot; {settings.model_secret_hint}")
    version, content = load(blob, settings.model_secret.encode())
    about: dict[str, Any] = {}
    if isinstance(content, ServedModels):
        served = getattr(content, "bandit", None)
        if served is None:
            raise SnapshotError(f"the model snapshot v{version} holds no bandit (it was written "
                                "before the learner learnt the bandit)")
        about = {"version": version, **{k.removeprefix("bandit_"): v
                                        for k, v in content.learner.items()
                                        if k.startswith("bandit_")}}
        content = served.to_state()
    try:
        chooser = ThompsonChooser.from_state(content, settings.bandit_exploration,
                                             settings.bandit_reward_wait_minutes * 60_000)
    except (StreamprocError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"the snapshot is signed but holds no bandit: {exc}") from exc
    return chooser, about


async def bandit_from_redis(settings: Settings) -> tuple[ThompsonChooser, dict[str, Any]]:
    """The bandit the workers serve: in the learner's model snapshot in Redis; a clear error
    when there is none."""
    from streamproc.errors import StreamprocError, masked_url, redis_unreachable
    from streamproc.learning.modelstore import RedisModelStore
    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
    from streamproc.redis_options import redis_client
    from streamproc.state.keys import model_key

    client = redis_client(settings, decode_responses=False)
    try:
        blob = await RedisModelStore(client, settings.app_id).get("serving")
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc,
                                otherwise="give --bandit-snapshot FILE") from None
    finally:
        await client.aclose()
    if blob is None:
        raise StreamprocError(f"no model snapshot in Redis ({model_key(settings.app_id, 'serving')}"
                              f" at {masked_url(settings.redis_url)}): the learner writes one, "
                              "with the "
                              "bandit, once it has learnt, when STREAMPROC_MODEL_SECRET is set; "
                              "or give --bandit-snapshot FILE")
    return read_bandit(blob, settings)


def bandit_from(settings: Settings, snapshot: Path | None) -> tuple[ThompsonChooser,
                                                                    dict[str, Any]]:
    """:func:`read_bandit` of a snapshot file, or of the snapshot in Redis when ``snapshot``
    is None."""
    from streamproc.errors import StreamprocError

    if snapshot is None:
        return asyncio.run(bandit_from_redis(settings))
    try:
        blob = snapshot.read_bytes()
    except OSError as exc:
        raise StreamprocError(f"cannot read {snapshot}: {exc.strerror or exc}") from None
    return read_bandit(blob, settings)


def _policy(settings: Settings, name: str,
            snapshot: Path | None) -> Policy | SamplePolicy:
    from streamproc.decisions.evaluation import ContextualFit, FixedActionPolicy, UniformPolicy
    from streamproc.errors import StreamprocError

    if name == "uniform":
        return UniformPolicy()
    if name == "contextual":
        return ContextualFit(settings.bandit_exploration)
    if name.startswith("action:") and len(name) > len("action:"):
        return FixedActionPolicy(name.removeprefix("action:"))
    if name != "bandit":
        raise StreamprocError(f"unknown candidate {name!r}: use uniform, bandit, contextual "
                              "or action:ID")
    return bandit_from(settings, snapshot)[0]


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.decisions.evaluation import ContextualFit, evaluate, samples_from_log

    policies = [_policy(settings, name, args.bandit_snapshot)
                for name in (args.candidate or ["uniform"])]
    log = _load(settings, args)
    # Every candidate is judged on the same decisions: those with features, for a contextual.
    samples, excluded = samples_from_log(log, args.reward, args.context, args.experiment,
                                         args.arm, features=any(isinstance(p, ContextualFit)
                                                                for p in policies))
    results = [evaluate(samples, policy, args.reward, excluded) for policy in policies]
    for result in results:
        result.notes = log.notes() + result.notes
    if args.json:
        _print_json([r.as_dict() for r in results])
    else:
        print("\n\n".join(r.render() for r in results))
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.decisions.report import experiment_report

    report = asyncio.run(experiment_report(settings, args.decisions, args.feedback,
                                           args.purchases, args.by, args.experiment,
                                           sys.stderr))
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.render())
    return 0


def cmd_kpis(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.decisions.kpi_summary import render_kpis, summarise_counters
    from streamproc.errors import redis_unreachable
    from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
    from streamproc.state.counters import read_counters
    from streamproc.state.store import RedisStore

    async def read() -> Any:
        store = RedisStore.from_settings(settings)
        try:
            return await read_counters(store.client, settings.app_id, args.days)
        finally:
            await store.close()

    try:
        counters = asyncio.run(read())
    except REDIS_UNREACHABLE as exc:
        raise redis_unreachable(settings.redis_url, exc,
                                why="the KPI counters live there") from None
    summary = summarise_counters(counters, args.by)
    if args.json:
        _print_json(summary)
    else:
        print(render_kpis(summary))
    return 0


def cmd_bandit(settings: Settings, args: argparse.Namespace) -> int:
    chooser, about = bandit_from(settings, args.snapshot)
    # A served copy keeps no open expectations: the learner's count is the one to show.
    _print_json({**chooser.summary(), **about})
    return 0


def cmd_respond(settings: Settings, args: argparse.Namespace) -> int:
    from streamproc.simulator.responder import respond_to_decisions

    stats = asyncio.run(respond_to_decisions(settings, args.customers, args.seed,
                                             from_beginning=args.from_beginning,
                                             limit=args.max,
                                             wall_clock=not args.accelerated))
    print(stats.summary())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``evaluate``, ``report``, ``kpis``, ``bandit`` and ``respond`` on the CLI's
    sub-parsers."""
    p = sub.add_parser(
        "evaluate", help="estimate a candidate policy's value from logged decisions (IPS, DR)",
        description="Off-policy evaluation: what a candidate policy would have earned per "
        "decision, estimated from logged decisions (with their propensities) and their "
        "feedback, by inverse propensity scoring (IPS) and doubly robust (DR) estimation, with "
        "95%% intervals and the effective sample size, and its gain over the logged policy "
        "on the same decisions (DR minus the logged reward, paired, with its interval): "
        "whether it would have done better. Control-group and non-personalised "
        "decisions are left out. " + SOURCES_HELP,
        epilog="Candidates: uniform (each eligible action alike), bandit (the learning "
        "bandit the workers serve, from the learner's model snapshot in Redis, or "
        "--bandit-snapshot FILE; needs STREAMPROC_MODEL_SECRET), contextual (LinUCB on the "
        "features the decisions logged, learnt from the log itself, cross-fitted), "
        "action:ID (always that action). Example: streamproc evaluate --arm bandit "
        "--candidate contextual --reward revenue")
    _add_sources(p)
    p.add_argument("--candidate", action="append", metavar="POLICY",
                   help="uniform, bandit, contextual or action:ID; repeat to compare (default: "
                   "uniform)")
    p.add_argument("--bandit-snapshot", type=Path, metavar="FILE",
                   help="a signed snapshot file (the learner's model snapshot, or a bandit's "
                   "own) instead of the one in Redis")
    p.add_argument("--reward", choices=["conversion", "click", "revenue"],
                   default="conversion", help="what counts as the reward (default: conversion)")
    p.add_argument("--context", default="context", metavar="PATH",
                   help="dotted path of the context key in a decision record, e.g. "
                   "segments.rfm (default: context; missing = one context for all)")
    p.add_argument("--experiment", metavar="ID", help="only decisions of this experiment")
    p.add_argument("--arm", metavar="ID", help="only decisions of this experiment arm")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "report", help="experiment results per arm and segment, with uplift over control",
        description="Per experiment arm (and per segment with --by): customers, decisions, "
        "conversion (share of customers who converted), click rate (per decision), revenue "
        "per customer, and the uplift over the control group, with 95%% intervals. Decisions "
        "outside experiments are grouped by policy under (none). " + SOURCES_HELP)
    _add_sources(p)
    p.add_argument("--by", metavar="PATH", help="also split by a dotted path of the decision "
                   "record, e.g. segments.rfm or segments.cluster")
    p.add_argument("--experiment", metavar="ID", help="only this experiment")
    p.add_argument("--purchases", type=Path, metavar="FILE",
                   help="purchase events as JSON Lines, attributed to the decisions (default: "
                   "the purchases topic when reading the decisions topic)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "kpis", help="the KPIs the workers count in Redis, per segment, arm and action",
        description="Read the KPI counters the workers keep in Redis (exactly once, in each "
        "customer's own write) and print, per segment, experiment arm and action: decisions, "
        "customers reached, impressions, opens, clicks, purchases and revenue attributed to "
        "a decision (STREAMPROC_ATTRIBUTION_HOURS), buyers and the rates; the same per day "
        "and arm; NPS per segment; retention per first-purchase cohort. The last --days days "
        "that have counters (STREAMPROC_KPI_DAYS are kept).",
        epilog="Example: streamproc kpis --days 7 --by cluster --json")
    p.add_argument("--days", type=int, default=7, metavar="N",
                   help="the latest N days with counters (default: 7)")
    p.add_argument("--by", default="all", metavar="SEGMENTATION",
                   help="one segmentation, e.g. rfm, lifecycle, cluster (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=cmd_kpis)

    p = sub.add_parser(
        "bandit", help="print what the learning bandit has learnt (the one the workers serve)",
        description="Read the learner's model snapshot from Redis (or --snapshot FILE), "
        "verify its signature with STREAMPROC_MODEL_SECRET and print, as JSON, the bandit it "
        "serves: per context and action the outcomes learnt and the posterior success rate, "
        "with the snapshot's version, the rewards learnt, the decisions still awaiting theirs, "
        "those closed as zero after the wait and the copies dropped. Exits 2 when there is no "
        "snapshot or it cannot be trusted.")
    p.add_argument("--snapshot", type=Path, metavar="FILE",
                   help="a signed snapshot file (the learner's model snapshot, or a bandit's "
                   "own) instead of the one in Redis")
    p.set_defaults(func=cmd_bandit)

    p = sub.add_parser(
        "respond", help="simulated customers answer live decisions with feedback",
        description="Read the decisions topic and answer every decision about a simulated "
        "customer (of `streamproc simulate` with the same --customers and --seed) with the "
        "feedback its hidden persona would give: an impression, maybe a click, maybe a "
        "conversion with revenue, sent to the feedback topic. Other customers' decisions are "
        "skipped. Runs until Ctrl-C or --max.",
        epilog="Example, in three shells: streamproc worker; streamproc simulate --customers "
        "1000; streamproc respond --customers 1000. Then: streamproc report")
    p.add_argument("--customers", type=int, default=1000,
                   help="the simulated population's size, as given to simulate (default: 1000)")
    p.add_argument("--seed", type=int, default=7, help="as given to simulate (default: 7)")
    p.add_argument("--from-beginning", action="store_true",
                   help="also answer the decisions already on the topic")
    p.add_argument("--max", type=int, metavar="N", help="stop after answering N decisions")
    p.add_argument("--accelerated", action="store_true",
                   help="send each answer at once, though stamped ahead of the clock (for "
                   "decisions of `simulate --accelerated`); by default a click or conversion "
                   "is sent when the wall clock reaches its time")
    p.set_defaults(func=cmd_respond)
