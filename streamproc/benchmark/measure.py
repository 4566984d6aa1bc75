"""Pure arithmetic of the benchmark: steady throughput from commit samples, percentiles.

>>> steady_rate([(0.0, 0), (1.0, 1000), (2.0, 3000), (3.0, 5000), (4.5, 6000)], 0.0, 6000)
(2000.0, 'commits')
>>> steady_rate([(0.5, 0), (3.0, 600)], 1.0, 600)
(300.0, 'stable-final')
>>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5)
3.0
"""

from __future__ import annotations

from collections.abc import Sequence

Sample = tuple[float, int]  # (monotonic seconds, events committed)


def steady_rate(samples: Sequence[Sample], stable_at: float, total: int) -> tuple[float, str]:
    """Events per second between the first and the last commit of a stage's steady part.

    ``samples`` are the moments the group's committed total was seen to change. Faust commits
    every 10,000 acknowledged messages or every 2.8 s, so a commit tells exactly what was applied
    when it was made, but the last one (reaching ``total``) may come a commit interval after the
    work ended. The rate is therefore measured from the first commit after the group became
    stable (``stable_at``: its workers joined, so start-up and rebalances are left out) to the
    last commit before the final one (method ``"commits"``). Short runs with too few commits
    fall back to the first and final commits (``"first-final"``), or, when one commit covered
    everything, to the time from ``stable_at`` to it (``"stable-final"``, a lower bound).
    """
    span = steady_span(samples, stable_at, total)
    return rate_over(samples, stable_at, span), span[2]


def rate_over(samples: Sequence[Sample], stable_at: float,
              span: tuple[int | None, int, str]) -> float:
    """Events per second over a span of :func:`steady_span`."""
    first, last, _ = span
    if first is None:
        earlier = [s[1] for s in samples if s[0] < stable_at]
        start: Sample = (stable_at, earlier[-1] if earlier else 0)
    else:
        start = samples[first]
    end = samples[last]
    return (end[1] - start[1]) / (end[0] - start[0])


def steady_span(samples: Sequence[Sample], stable_at: float,
                total: int) -> tuple[int | None, int, str]:
    """The indexes in ``samples`` of the first and last commit :func:`steady_rate` measures
    between (first None: from ``stable_at``), and the method's name.

    >>> steady_span([(0.0, 0), (1.0, 1000), (2.0, 3000), (3.0, 5000), (4.5, 6000)], 0.0, 6000)
    (1, 3, 'commits')
    """
    steady = [i for i, s in enumerate(samples) if s[0] >= stable_at and s[1] > 0]
    if not steady:
        raise ValueError("no commit was seen after the group became stable: the events were "
                         "all consumed during start-up; give it more events (--events)")
    before_final = [i for i in steady if samples[i][1] < total]
    if len(before_final) >= 3:
        return steady[0], before_final[-1], "commits"
    if len(steady) >= 2:
        return steady[0], steady[-1], "first-final"
    # One commit took everything: count from when the group became stable (a lower bound).
    return None, steady[-1], "stable-final"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]
