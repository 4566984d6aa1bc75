"""Contextual benchmark: the contextual policy against the bucketed bandit, on revenue per visit.

    .venv/bin/python -m bench.contextual_bench [--visits N] [--customers N] [--seed N] [--json F]

Offline and broker-free. Visits (``--visits``, 40,000, one every ~2 s of event time) come from
:class:`streamproc.simulator.situations.Situations`: customers whose response to the four
actions depends on their device, basket, value tier, intent, the local hour and the day's weather
in their city (a region's ``context_update``). One experiment
splits customers 50/50 (``streamproc.decisions.experiments.assign``, no control group):

* **bandit**: the bucketed Thompson bandit (``ThompsonChooser``), context key = slot and value
  tier (what a worker with ``context: value_tier`` would use);
* **contextual**: the contextual policy (``ContextualChooser``, LinUCB), falling back to the
  bandit while an action is cold, exactly as the engine does.

Both learn the way the running system does: one ``BanditLearner`` gets every decision's
``expect`` (with its features) and every conversion's ``reward`` in revenue (``revenue=True``:
capped at the slot's 95th percentile, scaled to [0, 1]); decisions without a conversion close as
zeros after ``--wait-min`` (30) minutes of event time. (In the system a worker serves the
learner's snapshot, a few seconds old; here the learner's own objects pick.)

Reported, with 95% intervals (Welch, per visit): revenue per visit per arm, over all visits and
over the second half (once both have learnt), their difference; conversion per visit; and a
check of ``streamproc evaluate``: the contextual policy learnt, cross-fitted, from the
**bandit arm's** logged decisions, its DR estimate of revenue per visit against the bandit
arm's own, to compare with what the contextual arm really earned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser, context_features
from streamproc.decisions.engine import Lesson, vector
from streamproc.decisions.evaluation import ContextualFit, Sample, evaluate
from streamproc.decisions.experiments import assign
from streamproc.decisions.lessons import BanditLearner
from streamproc.decisions.stats import Interval, difference_ci, mean_ci
from streamproc.simulator.situations import ACTIONS, Situations

START_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z
SLOT = "homepage_hero"
EXPERIMENT = {"id": "bench-contextual", "slots": [SLOT], "control_share": 0.0,
              "arms": [{"id": "bandit", "policy": "bandit", "share": 0.5},
                       {"id": "contextual", "policy": "contextual", "share": 0.5}]}


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    world = Situations(args.customers, args.seed)
    learner = BanditLearner(
        ThompsonChooser(args.exploration, args.wait_min * 60_000),
        ContextualChooser(args.exploration, args.alpha, args.min_outcomes,
                          args.wait_min * 60_000))
    revenue: dict[str, list[float]] = {"bandit": [], "contextual": []}
    wet: dict[str, list[float]] = {"bandit": [], "contextual": []}  # revenue of wet visits
    picked_by: dict[str, int] = {}
    samples: list[Sample] = []  # the bandit arm's log, for the evaluate check
    ts = START_MS
    for visit in range(args.visits):
        ts += 2000
        learner.advance(ts)
        situation = world.visit(ts)
        arm = assign(f"c{situation.customer}", EXPERIMENT)
        did = hashlib.blake2b(f"{args.seed}:{visit}".encode(), digest_size=16).hexdigest()
        features = context_features(situation.profile, situation.ts_ms)
        context = f"{SLOT}:{situation.profile['segments']['value_tier']}"
        pick = None
        if arm == "contextual":
            pick = learner.contextual.choose(ACTIONS, SLOT, features, bytes.fromhex(did))
        if pick is None:
            pick = learner.chooser.choose(ACTIONS, context, bytes.fromhex(did))
        picked_by[f"{arm}:{pick.policy}"] = picked_by.get(f"{arm}:{pick.policy}", 0) + 1
        learner.apply(Lesson("expect", did, pick.action_id, context, ts,
                             features=vector(features)), ts)
        earned = world.respond(situation, pick.action_id)
        if earned > 0:
            learner.apply(Lesson("reward", did, pick.action_id, context, ts, earned,
                                 revenue=True), ts)
        revenue[arm].append(earned)
        if features.get("weather_wet"):
            wet[arm].append(earned)
        if arm == "bandit":
            samples.append(Sample(did, context, pick.action_id, pick.propensity, ACTIONS,
                                  earned, SLOT, features))
        if (visit + 1) % 10_000 == 0:
            print(f"{visit + 1:,} visits", file=sys.stderr, flush=True)
    return {"revenue": revenue, "wet": wet, "picked_by": picked_by, "samples": samples,
            "learner": learner.stats(), "weights": learner.contextual.summary()["arms"]}


def _iv(iv: Interval) -> dict[str, float]:
    return iv.as_dict(4)


def summarise(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    rb, rc = run["revenue"]["bandit"], run["revenue"]["contextual"]
    hb, hc = rb[len(rb) // 2:], rc[len(rc) // 2:]
    offline = evaluate(run["samples"], ContextualFit(args.exploration), "revenue")
    return {
        "visits": args.visits, "customers": args.customers, "seed": args.seed,
        "per_arm_visits": {"bandit": len(rb), "contextual": len(rc)},
        "revenue_per_visit": {"bandit": _iv(mean_ci(rb)), "contextual": _iv(mean_ci(rc)),
                              "difference": _iv(difference_ci(rc, rb))},
        "second_half": {"bandit": _iv(mean_ci(hb)), "contextual": _iv(mean_ci(hc)),
                        "difference": _iv(difference_ci(hc, hb))},
        "wet_visits": {"bandit": _iv(mean_ci(run["wet"]["bandit"])),
                       "contextual": _iv(mean_ci(run["wet"]["contextual"])),
                       "difference": _iv(difference_ci(run["wet"]["contextual"],
                                                       run["wet"]["bandit"])),
                       "share": round((len(run["wet"]["bandit"]) + len(run["wet"]["contextual"]))
                                      / max(1, len(rb) + len(rc)), 4)},
        "free_delivery_weights": run["weights"].get(f"{SLOT}/free_delivery", {}),
        "conversion_per_visit": {
            "bandit": _iv(mean_ci([1.0 if r > 0 else 0.0 for r in rb])),
            "contextual": _iv(mean_ci([1.0 if r > 0 else 0.0 for r in rc]))},
        "picked_by": run["picked_by"],
        "evaluate_on_bandit_log": offline.as_dict(),
        "learner": run["learner"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load": [round(x, 1) for x in os.getloadavg()]},
    }


def render(s: dict[str, Any]) -> str:
    def row(label: str, iv: dict[str, float]) -> str:
        return f"  {label:<34} {iv['value']:9.4f}   95% CI [{iv['low']:.4f}, {iv['high']:.4f}]"

    r, h, e = s["revenue_per_visit"], s["second_half"], s["evaluate_on_bandit_log"]
    return "\n".join([
        f"{s['visits']:,} visits of {s['customers']:,} customers, seed {s['seed']} "
        f"(bandit arm {s['per_arm_visits']['bandit']:,}, contextual arm "
        f"{s['per_arm_visits']['contextual']:,})",
        "revenue per visit, all visits:",
        row("bandit (per value tier)", r["bandit"]), row("contextual", r["contextual"]),
        row("contextual - bandit", r["difference"]),
        "revenue per visit, second half:",
        row("bandit (per value tier)", h["bandit"]), row("contextual", h["contextual"]),
        row("contextual - bandit", h["difference"]),
        f"revenue per visit, wet weather ({s['wet_visits']['share']:.0%} of visits):",
        row("bandit (per value tier)", s["wet_visits"]["bandit"]),
        row("contextual", s["wet_visits"]["contextual"]),
        row("contextual - bandit", s["wet_visits"]["difference"]),
        f"free_delivery's strongest weights: {s['free_delivery_weights']}",
        "conversion per visit:",
        row("bandit", s["conversion_per_visit"]["bandit"]),
        row("contextual", s["conversion_per_visit"]["contextual"]),
        f"picks by arm:policy: {s['picked_by']}",
        "streamproc evaluate on the bandit arm's log (contextual, cross-fitted):",
        row("logged bandit (observed)", e["logged_policy"]), row("contextual, DR", e["dr"]),
        row("gain over logged (DR)", e["gain_over_logged"]),
        f"  verdict: {e['verdict']}",
        f"load average {s['machine']['load']}",
    ])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.contextual_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--visits", type=int, default=40_000)
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--exploration", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--min-outcomes", type=int, default=30)
    p.add_argument("--wait-min", type=int, default=30)
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    summary = summarise(args, simulate(args))
    summary["seconds"] = round(time.perf_counter() - began, 1)
    print(render(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
