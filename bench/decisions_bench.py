"""Decisions benchmark: the learning bandit vs uniform random vs the control group, in simulation.

    .venv/bin/python -m bench.decisions_bench [--customers N] [--visits N] [--json out.json]

Offline and broker-free. ``--customers`` simulated customers (20,000; ``Population.generate``,
seed 7) carry hidden preferences over the decision actions (``--actions``, by default
``streamproc.simulator.preferences.DEFAULT_ACTIONS``; any ids work): each persona converts on
each action with its own hidden probability (:mod:`streamproc.simulator.preferences`).

``--visits`` visits (60,000) arrive in event time (one every ~2 s on average): a random customer
asks for the ``homepage_hero`` slot. The customer's arm comes from
``streamproc.decisions.experiments.assign`` on one experiment: 10% control (the slot's neutral
``bestsellers_hero``), the rest split evenly between the **bandit** (``ThompsonChooser``,
context key = the customer's favourite category, which a worker would see as a segment) and
**random** (``UniformChooser``), both over every action (eligibility rules are not
simulated). Each decision is answered by the simulator the way the persona would: an
impression, maybe a click, maybe (10 minutes later in event time) a conversion with revenue.
The bandit learns the way a worker would: ``expect`` at the decision, ``reward(1)`` when the
conversion arrives, ``advance(watermark)`` closes decisions without a conversion after
``--wait-min`` minutes (60) as zeros.

Reported (intervals are 95%):

1. ``streamproc report``'s numbers on the logged decisions and feedback: per arm customers,
   decisions, conversion per customer, click rate, revenue per customer, uplift over control;
2. conversion per decision per arm, and the learning curve: at every ``--checkpoint`` visits
   (2,000), the bandit's and random's cumulative conversion per decision; "events to beat random"
   is the first check (one every 250 visits) from which the bandit's lead is significant (the
   Welch interval of the difference of cumulative conversion per decision is above 0) at every
   later check;
3. a check of ``streamproc evaluate``: the final bandit, frozen, is evaluated from the **random
   arm's** logged decisions by IPS and doubly robust estimation, and compared with its true
   value on the same customers (``sum_a pi(a|x) * p_true(customer, a)``, known in simulation);
4. the cost of a pick: ``ThompsonChooser.choose`` vs ``UniformChooser.choose`` measured on the
   same run, as a ratio.

Progress goes to stderr, tables to stdout, all figures to ``--json`` when given.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.chooser import Pick, UniformChooser
from streamproc.decisions.decision_log import join
from streamproc.decisions.evaluation import evaluate, samples_from_log
from streamproc.decisions.experiments import CONTROL, assign
from streamproc.decisions.report import arm_results, render_table
from streamproc.decisions.stats import difference_ci, proportion_ci
from streamproc.simulator.population import Customer, Population
from streamproc.simulator.preferences import DEFAULT_ACTIONS, NEUTRAL_ACTION, Preferences
from streamproc.simulator.sessions import format_ts

START_MS = 1_772_323_200_000  # 2026-03-01T00:00:00Z
SLOT = "homepage_hero"
EXPERIMENT_ID = "bench-nba"
LEAD_EVERY = 250  # visits between two significance checks of the bandit's lead


def experiment(control_share: float) -> dict[str, Any]:
    return {"id": EXPERIMENT_ID, "slots": [SLOT], "control_share": control_share,
            "arms": [{"id": "bandit", "policy": "bandit", "share": 0.5},
                     {"id": "random", "policy": "uniform", "share": 0.5}]}


def simulate(args: argparse.Namespace) -> dict[str, Any]:
    import random

    actions = tuple(args.actions)
    population = Population.generate(args.customers, args.seed)
    customers = {c.customer_id: c for c in population.customers}
    prefs = Preferences(actions, args.seed)
    exp = experiment(args.control_share)
    bandit = ThompsonChooser(exploration=args.exploration, reward_wait_ms=args.wait_min * 60_000)
    uniform = UniformChooser()
    rng = random.Random(f"visits:{args.seed}")
    arms_of: dict[str, str] = {}
    decisions: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    due: list[tuple[int, int, dict[str, Any]]] = []  # (event time, seq, feedback event)
    converted_by_arm: dict[str, list[float]] = {"bandit": [], "random": [], CONTROL: []}
    curve: list[dict[str, Any]] = []
    leads: list[tuple[int, int, float]] = []  # (visits, bandit decisions, lead's lower bound)
    cost = {"bandit": [0.0, 0], "random": [0.0, 0]}
    ts = START_MS
    seq = 0

    def deliver(until_ms: float) -> None:
        while due and due[0][0] <= until_ms:
            _, _, event = heapq.heappop(due)
            feedback.append(event)
            if event["outcome"] == "conversion" and arms_of[event["decision_id"]] == "bandit":
                bandit.reward(event["decision_id"], 1.0)

    for visit in range(args.visits):
        ts += int(rng.expovariate(1 / 2000)) + 1
        deliver(ts)
        bandit.advance(ts)
        customer = rng.choice(population.customers)
        arm = assign(customer.customer_id, exp)
        decision_id = hashlib.blake2b(f"{args.seed}:{visit}".encode(),
                                      digest_size=16).hexdigest()
        context = customer.top_categories(1)[0]
        if arm == CONTROL:
            pick = Pick(NEUTRAL_ACTION, 1.0, "neutral")
        else:
            chooser = bandit if arm == "bandit" else uniform
            started = time.perf_counter()
            pick = chooser.choose(actions, context, decision_id.encode())
            cost[arm][0] += time.perf_counter() - started
            cost[arm][1] += 1
            if arm == "bandit":
                bandit.expect(decision_id, pick.action_id, context, ts)
        arms_of[decision_id] = arm
        decisions.append({
            "decision_id": decision_id, "customer_id": customer.customer_id,
            "ts": format_ts(ts), "slot": SLOT, "channel": "web",
            "action": {"id": pick.action_id, "kind": "content"},
            "personalised": arm != CONTROL, "context": context,
            "segments": {"top_category": context}, "experiment": {"id": EXPERIMENT_ID, "arm": arm},
            "propensity": pick.propensity, "policy": pick.policy,
        })
        answered = prefs.respond(customer, {"decision_id": decision_id, "ts_ms": ts,
                                            "action_id": pick.action_id})
        for at, event in answered:
            heapq.heappush(due, (at, seq, event))
            seq += 1
        converted_by_arm[arm].append(
            1.0 if any(e["outcome"] == "conversion" for _, e in answered) else 0.0)
        if (visit + 1) % LEAD_EVERY == 0:
            b, r = converted_by_arm["bandit"], converted_by_arm["random"]
            leads.append((visit + 1, len(b), difference_ci(b, r).low))
        if (visit + 1) % args.checkpoint == 0:
            b, r = converted_by_arm["bandit"], converted_by_arm["random"]
            lead = difference_ci(b, r)
            window = args.checkpoint // 2
            curve.append({
                "visits": visit + 1, "bandit_decisions": len(b),
                "bandit": sum(b) / len(b), "random": sum(r) / len(r),
                "bandit_last_window": sum(b[-window:]) / len(b[-window:]),
                "random_last_window": sum(r[-window:]) / len(r[-window:]),
                "lead": lead.value, "lead_low": lead.low, "lead_high": lead.high,
            })
            print(f"{visit + 1:,} visits: conversion per decision bandit {curve[-1]['bandit']:.4f}"
                  f" vs random {curve[-1]['random']:.4f}", file=sys.stderr, flush=True)
    deliver(math.inf)
    bandit.advance(2**62)
    return {"actions": actions, "customers": customers, "prefs": prefs, "bandit": bandit,
            "decisions": decisions, "feedback": feedback, "converted": converted_by_arm,
            "curve": curve, "leads": leads, "cost": cost}


def events_to_beat_random(leads: list[tuple[int, int, float]]) -> dict[str, int] | None:
    """The first check from which the bandit's lead stays significantly above 0."""
    first = None
    for visits, bandit_decisions, low in leads:
        if low > 0:
            first = first or {"visits": visits, "bandit_decisions": bandit_decisions}
        else:
            first = None
    return first


def true_value(chooser: ThompsonChooser, decisions: list[dict[str, Any]],
               customers: dict[str, Customer], prefs: Preferences,
               actions: Sequence[str]) -> float:
    """The frozen chooser's expected conversion per decision on these decisions' customers."""
    total = 0.0
    for d in decisions:
        customer = customers[d["customer_id"]]
        probs = chooser.probabilities(actions, d["context"])
        total += math.fsum(p * prefs.conversion(customer, a)
                           for a, p in zip(actions, probs, strict=True))
    return total / len(decisions)


def summarise(args: argparse.Namespace, run: dict[str, Any]) -> dict[str, Any]:
    log = join(run["decisions"], run["feedback"])
    rows = arm_results(log, experiment=EXPERIMENT_ID)
    per_decision = {arm: proportion_ci(int(sum(v)), len(v)).as_dict()
                    for arm, v in run["converted"].items()}
    beat = events_to_beat_random(run["leads"])
    # Off-policy check: the final bandit, frozen, from the random arm's uniform logs. Its
    # candidates are every action, sorted, as evaluate() derives them from the log.
    bandit: ThompsonChooser = run["bandit"]
    samples, _ = samples_from_log(log, "conversion", "context", EXPERIMENT_ID, "random")
    estimate = evaluate(samples, bandit, "conversion")
    random_decisions = [d for d in run["decisions"] if d["experiment"]["arm"] == "random"]
    candidates = sorted(run["actions"])
    truth = true_value(bandit, random_decisions, run["customers"], run["prefs"], candidates)
    prefs: Preferences = run["prefs"]
    oracle = math.fsum(max(prefs.conversion(run["customers"][d["customer_id"]], a)
                           for a in run["actions"]) for d in random_decisions)
    uniform_truth = math.fsum(
        math.fsum(prefs.conversion(run["customers"][d["customer_id"]], a)
                  for a in run["actions"]) / len(run["actions"]) for d in random_decisions)
    cost = {arm: 1e6 * total / max(n, 1) for arm, (total, n) in run["cost"].items()}
    return {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "parameters": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in vars(args).items() if k != "json"},
        "report": [r.as_dict() for r in rows],
        "report_table": render_table(rows, log.notes()),
        "conversion_per_decision": per_decision,
        "curve": run["curve"],
        "events_to_beat_random": beat,
        "evaluation": {
            "from_random_arm_decisions": len(samples),
            "ips": estimate.ips.as_dict(), "dr": estimate.dr.as_dict(),
            "effective_sample_size": round(estimate.effective_sample_size, 1),
            "true_value_of_frozen_bandit": round(truth, 6),
            "true_value_of_uniform": round(uniform_truth / len(random_decisions), 6),
            "true_value_of_oracle": round(oracle / len(random_decisions), 6),
            "ips_covers_truth": estimate.ips.low <= truth <= estimate.ips.high,
            "dr_covers_truth": estimate.dr.low <= truth <= estimate.dr.high,
        },
        "choose_us": {"bandit": round(cost["bandit"], 1), "uniform": round(cost["random"], 2),
                      "ratio": round(cost["bandit"] / cost["random"], 1)
                      if cost["random"] else None},
    }


def render(summary: dict[str, Any]) -> str:
    out = ["== Experiment report (streamproc report's numbers; 95% intervals) ==",
           summary["report_table"], "", "== Conversion per decision =="]
    for arm, iv in summary["conversion_per_decision"].items():
        out.append(f"  {arm:<8} {100 * iv['value']:.2f}% [{100 * iv['low']:.2f}, "
                   f"{100 * iv['high']:.2f}]")
    out += ["", "== Learning curve (cumulative conversion per decision) ==",
            "  visits  bandit decisions  bandit  random  lead [95% CI]  bandit/random last "
            "window"]
    for p in summary["curve"]:
        out.append(f"  {p['visits']:>6,}  {p['bandit_decisions']:>16,}  {p['bandit']:.4f}  "
                   f"{p['random']:.4f}  {p['lead']:+.4f} [{p['lead_low']:+.4f}, "
                   f"{p['lead_high']:+.4f}]  {p['bandit_last_window']:.4f}/"
                   f"{p['random_last_window']:.4f}")
    beat = summary["events_to_beat_random"]
    out.append("  bandit significantly ahead of random from "
               + (f"{beat['visits']:,} visits ({beat['bandit_decisions']:,} bandit decisions) on"
                  if beat else "no checkpoint (not significant by the end)"))
    ev = summary["evaluation"]
    out += ["", "== Off-policy evaluation of the final bandit from the random arm's logs ==",
            f"  decisions used {ev['from_random_arm_decisions']:,}, effective sample size "
            f"{ev['effective_sample_size']:,}",
            f"  IPS {ev['ips']['value']:.4f} [{ev['ips']['low']:.4f}, {ev['ips']['high']:.4f}]"
            f"  DR {ev['dr']['value']:.4f} [{ev['dr']['low']:.4f}, {ev['dr']['high']:.4f}]",
            f"  true value {ev['true_value_of_frozen_bandit']:.4f} (uniform "
            f"{ev['true_value_of_uniform']:.4f}, oracle {ev['true_value_of_oracle']:.4f}); "
            f"covered by IPS: {ev['ips_covers_truth']}, by DR: {ev['dr_covers_truth']}",
            "", "== Cost of a pick (same run) ==",
            f"  ThompsonChooser.choose {summary['choose_us']['bandit']} us, UniformChooser "
            f"{summary['choose_us']['uniform']} us: x{summary['choose_us']['ratio']}"]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.decisions_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=20_000, help="simulated customers (20,000)")
    p.add_argument("--visits", type=int, default=60_000, help="decisions to make (60,000)")
    p.add_argument("--checkpoint", type=int, default=2000, help="visits between curve points")
    p.add_argument("--actions", nargs="+", default=list(DEFAULT_ACTIONS), metavar="ID",
                   help="action ids of the catalogue (default: the simulator's defaults)")
    p.add_argument("--control-share", type=float, default=0.1, help="control group (0.1)")
    p.add_argument("--exploration", type=float, default=0.1,
                   help="STREAMPROC_BANDIT_EXPLORATION for the bandit (0.1)")
    p.add_argument("--wait-min", type=int, default=60,
                   help="minutes of event time before a decision without conversion counts 0")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", help="also write every figure to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run = simulate(args)
    summary = summarise(args, run)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(render(summary))
    print(f"\n({summary['seconds']} s on {summary['machine']['cpus']} CPUs, Python "
          f"{summary['machine']['python']})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({k: v for k, v in summary.items() if k != "report_table"}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
