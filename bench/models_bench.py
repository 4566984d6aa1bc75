"""Models benchmark: online purchase intent vs a batch model, behaviour clusters, model costs.

    .venv/bin/python -m bench.models_bench [--events N] [--customers N] [--json out.json]

Offline and broker-free. The simulator's pure generator (``generate_events``, fixed seed) makes
``--events`` events (100,000) for ``--customers`` customers (1,000); they are replayed in event
time through ``streamproc.state.profile.apply_event`` into in-memory profiles, as a worker would:

- on every browsing event, ``intent_features`` is computed, scored by ``IntentModel`` and
  parked in ``PendingLabels`` with its score; a purchase labels the customer's snapshots of the
  last ``--horizon-min`` minutes (30) positive, older ones expire negative (the watermark is the
  event time of the event being replayed); every label goes to ``IntentModel.observe`` with the
  score given when the snapshot was taken (delayed progressive validation);
- at each session start and each purchase the customer's ``behaviour_vector`` is learnt by
  ``BehaviourClusters`` (and, for comparison, River's DBSTREAM); at the end every customer's
  final vector is assigned and compared with the hidden personas (purity);
- each buyer's first event of a day updates ``LifetimeValue``'s population parameters.

Then a batch model (scikit-learn: a standardised logistic regression and a histogram gradient
boosting; the stronger is kept) is trained on the first 70 % of the labelled snapshots in
snapshot-time order and both it and the online scores are evaluated on the last 30 % (the same
snapshots). An "oracle" batch model that also sees each customer's hidden purchase propensity
shows how much of the label is predictable at all from this simulator.

Costs are measured on this machine around each call (features, predict, observe = metrics +
drift detector + learn, cluster learn). Progress goes to stderr, the tables to stdout, all
figures to ``--json`` when given. scikit-learn is only needed for the batch comparison (the
``bench`` extra); without it that part is skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streamproc.days import DAY_MS
from streamproc.events.codec import parse_ts
from streamproc.models import (
    BehaviourClusters,
    IntentModel,
    Labelled,
    LifetimeValue,
    PendingLabels,
    behaviour_vector,
    intent_features,
    majority,
    purity,
)
from streamproc.models.intent import exact_auc
from streamproc.simulator import Population, generate_events
from streamproc.state.profile import Profile, apply_event, new_profile

START = datetime(2026, 3, 2, tzinfo=UTC)
BROWSING = frozenset({"page_view", "product_view", "search", "cart_add", "cart_remove",
                      "checkout"})
ENVELOPE = frozenset({"event_id", "type", "customer_id", "ts"})
TARGET_AUC, TARGET_GAP, TARGET_US = 0.85, 0.03, 100.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


class Timer:
    """Accumulated perf_counter time and calls of one step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def us(self) -> float:
        return self.seconds / self.calls * 1e6 if self.calls else 0.0


def replay(args: argparse.Namespace) -> dict[str, Any]:
    population = Population.generate(args.customers, seed=args.seed)
    personas = population.personas()
    propensity = {c.customer_id: c.propensity for c in population.customers}
    log(f"generating {args.events:,} events for {args.customers:,} customers ...")
    t0 = time.perf_counter()
    events = list(itertools.islice(generate_events(population, START, seed=args.seed),
                                   args.events))
    log(f"  {time.perf_counter() - t0:.1f} s; event time {events[0].event['ts']} .. "
        f"{events[-1].event['ts']}")

    model = IntentModel()
    labels = PendingLabels(horizon_ms=args.horizon_min * 60_000)
    clusters = BehaviourClusters(k=args.k, seed=args.seed)
    dbstream = None
    if args.dbstream:
        from river import cluster

        dbstream = cluster.DBSTREAM(clustering_threshold=0.4, fading_factor=0.001,
                                    cleanup_interval=100, intersection_factor=0.3,
                                    minimum_weight=1.0)
    ltv = LifetimeValue()
    profiles: dict[str, Profile] = {}
    t_feat, t_pred, t_obs, t_clu, t_db, t_ltv = (Timer() for _ in range(6))
    labelled: list[Labelled] = []
    timeline: list[dict[str, Any]] = []
    block: list[Labelled] = []
    pc = time.perf_counter

    def observe(batch: list[Labelled]) -> None:
        for item in batch:
            start = pc()
            model.observe(item.features, item.label, item.score)
            t_obs.seconds += pc() - start
            t_obs.calls += 1
            labelled.append(item)
            block.append(item)

    log("replaying through apply_event, features, labels and models ...")
    t0 = pc()
    for n, sim in enumerate(events, 1):
        ev = sim.event
        type_, customer, ts = ev["type"], ev["customer_id"], parse_ts(ev["ts"])
        data = {k: v for k, v in ev.items() if k not in ENVELOPE}
        p = profiles.get(customer)
        if p is None:
            p = profiles[customer] = new_profile(customer)
        if type_ == "purchase":
            observe(labels.on_purchase(customer, ts))
        sessions = p["counts"].get("sessions", 0)
        last_day = (p["last_seen_ms"] or 0) // DAY_MS
        apply_event(p, type_, ts, data)
        if type_ in BROWSING:
            start = pc()
            x = intent_features(p, type_, ts)
            mid = pc()
            score = model.predict_proba_one(x)
            end = pc()
            t_feat.seconds += mid - start
            t_pred.seconds += end - mid
            t_feat.calls += 1
            t_pred.calls += 1
            labels.add(customer, ts, x, score)
        if type_ == "purchase" or p["counts"].get("sessions", 0) != sessions:
            v = behaviour_vector(p)
            start = pc()
            clusters.learn_one(v)
            t_clu.seconds += pc() - start
            t_clu.calls += 1
            if dbstream is not None:
                start = pc()
                dbstream.learn_one(v)
                t_db.seconds += pc() - start
                t_db.calls += 1
        if p.get("rfm") and p["last_seen_ms"] // DAY_MS != last_day:
            # once per buyer and day, as LifetimeValue.learn_one asks
            start = pc()
            ltv.learn_one(p["rfm"], p["purchases"]["total"], p["purchases"]["orders"])
            t_ltv.seconds += pc() - start
            t_ltv.calls += 1
        observe(labels.expire(ts))
        if n % args.every == 0 or n == len(events):
            window = exact_auc([b.label for b in block], [b.score or 0.0 for b in block])
            stats = model.stats()
            row = {"events": n, "labelled": stats["n"], "positives": stats["positives"],
                   "auc_cumulative": stats["auc"], "auc_window": round(window, 4),
                   "drifts": stats["drifts"]}
            timeline.append(row)
            block = []
            log(f"  {n:>9,} events  {stats['n']:>7,} labelled  AUC cumulative "
                f"{stats['auc']:.4f}  last {args.every:,} events {window:.4f}  "
                f"({pc() - t0:.0f} s)")

    # Clusters: every customer's final vector against the hidden personas.
    finals = {c: behaviour_vector(p) for c, p in profiles.items()}
    assigned = {c: clusters.assign(v) for c, v in finals.items()}
    cluster_rows = []
    owners = majority(assigned, personas)
    sizes: dict[int, int] = {}
    for cid in assigned.values():
        sizes[cid] = sizes.get(cid, 0) + 1
    for cid, (persona, share) in owners.items():
        cluster_rows.append({"id": cid, "customers": sizes[cid], "persona": persona,
                             "share": share, "description": clusters.describe(cid)})
    result_clusters: dict[str, Any] = {
        "k": args.k, "purity": purity(assigned, personas), "clusters": cluster_rows,
        "learn_us": round(t_clu.us(), 1), "learnt": t_clu.calls, "refits": clusters.refits,
    }
    if dbstream is not None:
        db_assigned = {c: dbstream.predict_one(v) for c, v in finals.items()}
        result_clusters["dbstream"] = {
            "purity": purity(db_assigned, personas),
            "clusters": len(set(db_assigned.values())),
            "learn_us": round(t_db.us(), 1),
        }

    labelled.sort(key=lambda r: (r.ts_ms, r.customer_id))
    scored = t_feat.calls
    per_event = (t_feat.seconds + t_pred.seconds + t_obs.seconds) / scored * 1e6
    return {
        "machine": machine(),
        "events": len(events),
        "customers": args.customers,
        "seed": args.seed,
        "horizon_min": args.horizon_min,
        "replay_seconds": round(pc() - t0, 1),
        "snapshots_scored": scored,
        "intent": model.stats(),
        "timeline": timeline,
        "costs_us": {
            "features": round(t_feat.us(), 1),
            "predict": round(t_pred.us(), 1),
            "observe_per_label": round(t_obs.us(), 1),
            "per_scored_event": round(per_event, 1),
            "ltv_learn": round(t_ltv.us(), 1),
        },
        "clusters": result_clusters,
        "ltv": ltv_report(ltv, profiles, personas),
        "_labelled": labelled,
        "_propensity": propensity,
    }


def ltv_report(ltv: LifetimeValue, profiles: dict[str, Profile],
               personas: dict[str, str]) -> dict[str, Any]:
    """Mean predicted 365-day value per persona (a sanity check: buyers' personas rank first)."""
    by: dict[str, list[float]] = {}
    for c, p in profiles.items():
        value = ltv.predict_value(p.get("rfm"), p["purchases"]["total"],
                                  p["purchases"]["orders"])
        by.setdefault(personas[c], []).append(value)
    return {"params": {k: round(v, 4) for k, v in ltv.params.items()},
            "mean_value_by_persona": {k: round(sum(v) / len(v), 2)
                                      for k, v in sorted(by.items())}}


def batch_comparison(result: dict[str, Any]) -> dict[str, Any]:
    labelled: list[Labelled] = result["_labelled"]
    propensity: dict[str, float] = result["_propensity"]
    cut = int(len(labelled) * 0.7)
    test = labelled[cut:]
    y_test = [r.label for r in test]
    online = exact_auc(y_test, [r.score or 0.0 for r in test])
    out: dict[str, Any] = {"train": cut, "test": len(test),
                           "test_positive_rate": round(sum(y_test) / len(y_test), 4),
                           "online_auc": round(online, 4)}
    try:
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        log("scikit-learn is not installed (pip install -e '.[bench]'): no batch comparison")
        return out
    keys = sorted(labelled[0].features)
    x = np.array([[r.features[k] for k in keys] for r in labelled])
    y = np.array([r.label for r in labelled])
    hidden = np.array([[propensity[r.customer_id]] for r in labelled])
    candidates = {
        "logistic_regression": lambda: make_pipeline(StandardScaler(),
                                                     LogisticRegression(max_iter=2000)),
        "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(random_state=0),
    }
    batch: dict[str, float] = {}
    oracle: dict[str, float] = {}
    for name, make in candidates.items():
        log(f"  batch {name} ...")
        fitted = make().fit(x[:cut], y[:cut])
        scores = fitted.predict_proba(x[cut:])[:, 1].tolist()
        batch[name] = round(exact_auc(y_test, scores), 4)
        with_hidden = np.hstack([x, hidden])
        fitted = make().fit(with_hidden[:cut], y[:cut])
        scores = fitted.predict_proba(with_hidden[cut:])[:, 1].tolist()
        oracle[name] = round(exact_auc(y_test, scores), 4)
    best = max(batch, key=lambda k: batch[k])
    out |= {"batch_auc": batch, "batch_best": best, "gap": round(batch[best] - online, 4),
            "oracle_auc_with_hidden_propensity": oracle}
    return out


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nModels benchmark: {result['events']:,} events, {result['customers']:,} customers, "
          f"seed {result['seed']}, label horizon {result['horizon_min']} min")
    print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}")
    print("\nOnline intent (progressive validation, scores given at snapshot time)")
    print(f"{'events':>9} {'labelled':>9} {'pos rate':>8} {'AUC cum.':>9} {'AUC window':>10} "
          f"{'drifts':>6}")
    for r in result["timeline"]:
        rate = r["positives"] / r["labelled"] if r["labelled"] else 0.0
        print(f"{r['events']:>9,} {r['labelled']:>9,} {rate:>8.3f} {r['auc_cumulative']:>9.4f} "
              f"{r['auc_window']:>10.4f} {r['drifts']:>6}")
    b = result["batch"]
    print(f"\nOnline vs batch on the last 30 % of labelled snapshots ({b['test']:,}; trained on "
          f"the first {b['train']:,}; positive rate {b['test_positive_rate']:.3f})")
    print(f"  online IntentModel               {b['online_auc']:.4f}")
    for name, value in b.get("batch_auc", {}).items():
        print(f"  batch {name:<26} {value:.4f}")
    if "gap" in b:
        print(f"  gap (best batch - online)        {b['gap']:+.4f}")
        for name, value in b["oracle_auc_with_hidden_propensity"].items():
            print(f"  oracle {name:<25} {value:.4f}  (features + hidden propensity)")
    c = result["costs_us"]
    print(f"\nCost per scored event (µs): features {c['features']}, predict {c['predict']}, "
          f"observe {c['observe_per_label']} per label -> total {c['per_scored_event']}")
    cl = result["clusters"]
    print(f"\nBehaviour clusters: k={cl['k']}, purity {cl['purity']:.4f} against the personas; "
          f"learn {cl['learn_us']} µs ({cl['learnt']:,} vectors, {cl['refits']} refits)")
    for r in cl["clusters"]:
        print(f"  {r['id']:>2} {r['customers']:>5} customers  {r['persona']:<17} "
              f"{r['share']:>4.0%}  {r['description']}")
    if "dbstream" in cl:
        d = cl["dbstream"]
        print(f"  DBSTREAM: purity {d['purity']:.4f} with {d['clusters']} clusters, "
              f"learn {d['learn_us']} µs")
    lt = result["ltv"]
    print(f"\nLTV population parameters {lt['params']}")
    print("  mean predicted 365-day value by persona: "
          + ", ".join(f"{k} {v}" for k, v in lt["mean_value_by_persona"].items()))
    print("\nTargets")
    online = b["online_auc"]
    print(f"  online AUC >= {TARGET_AUC}: {online:.4f} "
          f"{'PASS' if online >= TARGET_AUC else 'FAIL'}")
    if "gap" in b:
        print(f"  within {TARGET_GAP} of batch: gap {b['gap']:+.4f} "
              f"{'PASS' if b['gap'] <= TARGET_GAP else 'FAIL'}")
    print(f"  <= {TARGET_US:.0f} µs per event: {c['per_scored_event']} "
          f"{'PASS' if c['per_scored_event'] <= TARGET_US else 'FAIL'}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.models_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000, help="events to replay (100,000)")
    p.add_argument("--customers", type=int, default=1000, help="simulated customers (1,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--horizon-min", type=int, default=30,
                   help="a purchase within this many minutes labels a snapshot positive")
    p.add_argument("--k", type=int, default=8, help="behaviour clusters (8)")
    p.add_argument("--every", type=int, default=10_000, help="progress every N events")
    p.add_argument("--no-dbstream", dest="dbstream", action="store_false",
                   help="skip the DBSTREAM comparison")
    p.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = replay(args)
    log("batch comparison ...")
    result["batch"] = batch_comparison(result)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    report(result)
    if args.json:
        public = {k: v for k, v in result.items() if not k.startswith("_")}
        with open(args.json, "w") as f:
            json.dump(public, f, indent=2, default=float)
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
