"""The served intent model as plain floats: River's scaler and logistic regression, folded.

The worker scores every browsing event with the learner's latest snapshot and never learns, so
the River pipeline (``StandardScaler | LogisticRegression``, :func:`~streamproc.models.intent.
default_pipeline`) is a fixed function between two snapshots. :func:`fold` reads it once, when a
snapshot is served, into one tuple of ``(position, mean, deviation, weight)`` per feature that
counts, and :meth:`FoldedIntent.predict` scores a tuple of feature values with one loop: about
a third of the pipeline's cost (2 µs against 6, docs/benchmarks.md), the same score to the last bit.

Bit for bit because it does River 0.26's float operations in River's order:

* ``StandardScaler.transform_one``: ``(x - mean) / var ** 0.5``, or ``0.0`` where the variance
  is 0 (a feature never seen, or constant); ``var ** 0.5`` is computed once here, which gives
  the same float;
* ``LogisticRegression``: ``weights.dot(x) + intercept``, where River's ``VectorDict.dot``
  sums ``weight * value`` over the features *in the order of x* (the serving order), skipping
  those without a weight, from ``0.0``; a feature with a zero variance adds ``+-0.0``, which
  changes no sum (a sum of floats that starts at ``0.0`` is never ``-0.0``), so it is left out
  unless its weight is not finite (then River's ``w * 0.0`` is ``nan``, and so is ours);
* ``sigmoid``: ``0`` below -30, ``1`` above 30, else ``1 / (1 + exp(-z))``.

A feature the model never saw (a newer feature set than the snapshot's) has no weight and no
variance: it adds nothing, as in River. A model of another shape (another scaler, a tree, a
pipeline with a learning step at prediction time) is not folded: :func:`fold` answers None and
the caller keeps River's ``predict_proba_one``. ``tests/unit/test_models_folded.py`` compares
the two on random vectors and on models trained on the simulator's stream.

>>> from streamproc.models.intent import default_pipeline
>>> pipeline = default_pipeline()
>>> for v in (0.1, 0.5, 0.9, 0.3):
...     pipeline.learn_one({"a": v, "b": 1 - v}, v > 0.4)
>>> folded = fold(pipeline, ("a", "b", "c"))
>>> x = {"a": 0.7, "b": 0.3, "c": 5.0}
>>> folded.predict((0.7, 0.3, 5.0)) == pipeline.predict_proba_one(x)[True]
True
>>> fold(pipeline, ("a",)).terms == ((0, *folded.terms[0][1:]),)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from river import compose, linear_model, optim, preprocessing

# A feature that counts: its position in the values, the scaler's mean and deviation, the weight.
Term = tuple[int, float, float, float]


class FoldedIntent(NamedTuple):
    """A folded scaler and logistic regression over features in a fixed order (see above)."""

    terms: tuple[Term, ...]
    intercept: float

    def predict(self, values: Sequence[float]) -> float:
        """P(True | values): the pipeline's ``predict_proba_one(x)[True]``, as a float."""
        z = 0.0
        for i, mean, deviation, weight in self.terms:
            z += weight * ((values[i] - mean) / deviation)
        z += self.intercept
        if z < -30:
            return 0.0
        if z > 30:
            return 1.0
        return 1 / (1 + math.exp(-z))


def fold(model: Any, names: Sequence[str]) -> FoldedIntent | None:
    """``model`` (a River pipeline) folded for feature values given in the order of ``names``;
    None when it is not a plain ``StandardScaler | LogisticRegression`` (keep River's then)."""
    if not isinstance(model, compose.Pipeline) or len(model.steps) != 2 \
            or model._LEARN_UNSUPERVISED_DURING_PREDICT:
        return None
    scaler, regression = model.steps.values()
    if type(scaler) is not preprocessing.StandardScaler or not scaler.with_std \
            or getattr(scaler, "window_size", None) is not None \
            or type(regression) is not linear_model.LogisticRegression \
            or type(regression.loss) is not optim.losses.Log:
        return None
    weights = regression._weights.to_dict()
    means, variances = scaler.means, scaler.vars
    terms: list[Term] = []
    for i, name in enumerate(names):
        if name not in weights:
            continue  # River's dot skips a feature without a weight
        weight = float(weights[name])
        variance = float(variances.get(name, 0.0))
        if variance:
            terms.append((i, float(means.get(name, 0.0)), variance ** 0.5, weight))
        elif not math.isfinite(weight):
            terms.append((i, 0.0, math.inf, weight))  # weight * 0.0 is nan, as in River
    return FoldedIntent(tuple(terms), float(regression.intercept))
