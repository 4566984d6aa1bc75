"""The bench's report as text: stages with their ratios, latency percentiles, targets, profile."""

from __future__ import annotations

from typing import Any

STAGE_LABELS = {
    "raw_aiokafka": "raw aiokafka (one consumer, in-process)",
    "bare_faust": "bare Faust app (decode + ack)",
    "pipeline_1_worker": "streamproc pipeline",
    "pipeline_2_workers": "streamproc pipeline",
    "pipeline_3_workers": "streamproc pipeline",
}
TARGET_LABELS = {
    "pipeline_vs_bare_faust": "pipeline (one worker) / bare Faust",
    "p99_ms_at_1000_per_s": "p99 send-to-decision at 1,000 events/s, ms",
    "two_vs_one_worker": "two workers / one worker",
}


def _cores(cpu: dict[str, Any] | None) -> str:
    """``1.02/1.87``: cores used by a stage's processes / by the whole machine.

    >>> _cores({"processes_cores": 1.02, "machine_busy_cores": 1.874}), _cores(None)
    ('1.02/1.87', '-')
    >>> _cores({"processes_cores": 0.9, "machine_busy_cores": None})
    '0.90/-'
    >>> _cores({"processes_cores": None, "machine_busy_cores": None})
    '-/-'
    """
    if not cpu:
        return "-"
    return "/".join("-" if cpu.get(k) is None else f"{cpu[k]:.2f}"
                    for k in ("processes_cores", "machine_busy_cores"))


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:>9.3f}" if base else f"{'':>9}"


def _rounds(stages: dict[str, Any]) -> list[str]:
    """With ``--rounds``: every round's events/s, and pipeline / bare Faust round by round.

    >>> print("\\n".join(_rounds({"bare_faust": {"events_per_s": 8000.0, "workers": 1,
    ...     "rounds_events_per_s": [8000.0, 9000.0, 7000.0]},
    ...     "pipeline_1_worker": {"events_per_s": 2400.0, "workers": 1,
    ...     "rounds_events_per_s": [2400.0, 2200.0, 2600.0]}})))
    each rate above is the median of 3 rounds (stages alternated); events/s by round:
      bare Faust app (decode + ack): 8,000 / 9,000 / 7,000
      streamproc pipeline, 1 worker: 2,400 / 2,200 / 2,600
      pipeline / bare Faust by round: 0.300 / 0.244 / 0.371
    >>> _rounds({"bare_faust": {"events_per_s": 8000.0, "workers": 1}})
    []
    """
    rounds = {name: s["rounds_events_per_s"] for name, s in stages.items()
              if s.get("rounds_events_per_s")}
    if not rounds:
        return []
    count = max(len(r) for r in rounds.values())
    lines = [f"each rate above is the median of {count} rounds (stages alternated); "
             "events/s by round:"]
    for name, rates in rounds.items():
        label = STAGE_LABELS.get(name, name)
        if name.startswith("pipeline"):
            workers = stages[name]["workers"]
            label += f", {workers} worker" + ("s" if workers != 1 else "")
        lines.append(f"  {label}: " + " / ".join(f"{r:,.0f}" for r in rates))
    pipeline, bare = rounds.get("pipeline_1_worker"), rounds.get("bare_faust")
    if pipeline and bare:
        lines.append("  pipeline / bare Faust by round: "
                     + " / ".join(f"{p / b:.3f}" for p, b in zip(pipeline, bare, strict=True)))
    return lines


def render(report: dict[str, Any]) -> str:
    m, o = report["machine"], report["options"]
    load = ", ".join(f"{x:g}" for x in m.get("load_average_at_start", []))
    lines = [
        f"streamproc bench {report['run_id']}, {report['date']}: {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gb']} GB; Python {m['python']}; Kafka {m['kafka_local_stack']}; Redis "
        f"{m['redis']}; load average at start {load}",
    ]
    ev = report.get("events")
    if ev:
        topics = ", ".join(f"{k} {v:,}" for k, v in ev["by_topic"].items())
        lines.append(f"{ev['count']:,} events ({topics}) of {ev['active_customers']:,} customers, "
                     f"{o['partitions']} partitions, batches of "
                     f"{report['settings']['batch_size']}; the pipeline's learner "
                     + ("in a process of its own" if o.get("learner", "worker") == "process"
                        else "in the workers"))
    stages = report.get("stages") or {}
    if stages:
        raw = stages.get("raw_aiokafka", {}).get("events_per_s")
        bare = stages.get("bare_faust", {}).get("events_per_s")
        lines += ["", f"{'stage':<42} {'workers':>7} {'events':>9} {'events/s':>10} "
                  f"{'vs raw':>9} {'vs Faust':>9} {'cores: stage/machine':>21}"]
        for name, s in stages.items():
            workers = s["workers"] or "-"
            lines.append(f"{STAGE_LABELS.get(name, name):<42} {workers!s:>7} {s['events']:>9,} "
                         f"{s['events_per_s']:>10,.0f} {_ratio(s['events_per_s'], raw)} "
                         f"{_ratio(s['events_per_s'], bare)} {_cores(s.get('cpu')):>21}")
        lines.append(f"cores: CPU seconds per second while the rate was measured, of the "
                     f"stage's processes (the workers and the pipeline's learner; this process "
                     f"for raw aiokafka) / of the whole machine ({m['cores']} cores)")
        lines += _rounds(stages)
        two = report["ratios"].get("two_vs_one_worker")
        if two is not None:
            busy = (stages["pipeline_2_workers"].get("cpu") or {}).get("machine_busy_cores")
            lines.append(f"two workers / one worker: {two:.2f}x on {m['cores']} cores (shared "
                         "with Kafka, Redis and this process" + (
                             f"; {busy:.2f} of them busy during the two workers' stage)"
                             if busy is not None else ")"))
    latency = report.get("latency")
    if latency:
        lines += ["", "latency, event sent -> its decision received (one pipeline worker; queued: "
                  "until the worker started the event's batch)",
                  f"{'offered/s':>10} {'sent/s':>8} {'events':>8} {'decisions':>9} "
                  f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'queued p50/p99':>15} "
                  f"{'drain s':>8}"]
        for r in latency:
            lines.append(f"{r['offered_per_s']:>10,} {r['achieved_per_s']:>8,.0f} "
                         f"{r['events']:>8,} {r['measured']:>9,} {r['p50_ms']:>8.1f} "
                         f"{r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
                         f"{r['queued_p50_ms']:>7.0f}/{r['queued_p99_ms']:<7.0f} "
                         f"{r['drain_s']:>8.1f}")
        floors = [r for r in latency if r.get("floor")]
        if floors:
            lines += ["", "the floor: the same events sent at the same rates, until handed to the "
                      "bare Faust app's agent in a batch (Faust's delivery and the batch wait), "
                      "and until read by a raw aiokafka consumer in this process",
                      f"{'offered/s':>10} {'to':<14} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                      f"{'max ms':>8} {'pipeline p99 / this p99':>24}"]
            for r in floors:
                for name, label in (("bare_faust", "bare Faust"), ("raw_aiokafka", "raw aiokafka")):
                    f = r["floor"][name]
                    times = f"{r['p99_ms'] / f['p99_ms']:.1f}x" if f["p99_ms"] > 0 else "-"
                    lines.append(f"{r['offered_per_s']:>10,} {label:<14} {f['p50_ms']:>8.1f} "
                                 f"{f['p95_ms']:>8.1f} {f['p99_ms']:>8.1f} {f['max_ms']:>8.1f} "
                                 f"{times:>24}")
    if o.get("quick"):
        lines += ["", "targets: not judged (--quick: a smoke test whose sizes are too small for "
                  "its figures to mean anything; run without --quick to measure)"]
    elif report["targets"]:
        lines += ["", "targets"]
        for t in report["targets"]:
            label = TARGET_LABELS.get(t["name"], t["name"])
            lines.append(f"  {label:<46} {t['target']:>8}  measured {t['value']:<8g} "
                         f"{'met' if t['met'] else 'NOT met'}")
    profile = report.get("profile")
    if profile:
        lines += ["", f"profile of one pipeline worker ({profile['events']:,} events under "
                  f"cProfile, {profile['events_per_s_under_cprofile']:,.0f} events/s; "
                  f"{profile['file']})",
                  "where the time goes (own time by what the code is for):"]
        for group, g in profile["groups"].items():
            lines.append(f"  {g['share']:>5.0%}  {group}")
        lines.append("top functions by cumulative time:")
        for f in profile["top_cumulative"]:
            lines.append(f"  {f['cumtime_s']:>8.2f}s {f['tottime_s']:>8.2f}s own "
                         f"{f['calls']:>10,} calls  {f['function']}")
    lines.append(f"\n(the bench took {report['seconds']:.0f}s)")
    return "\n".join(lines)
