"""Purchase intent in the scoring workers: score every browsing event with the served model.

The per-event hook of :class:`~streamproc.processor.Processor` (``scorer=``), in the style of
:class:`~streamproc.segments.segmenter.Segmenter`. On every event of a customer, after the profile
took the event:

* a **browsing** event (page_view, product_view, search, cart_add, cart_remove, checkout) is
  scored: ``x = intent_values(profile, type, ts)``, ``score`` the served model's probability
  (folded into plain floats when served, :mod:`streamproc.models.folded`: River's score, bit for
  bit), stored as ``profile["scores"] = {"intent": round(score, 4)}`` (read by the ``intent``
  segmentation, cold/warm/hot, and by the decision record) once the model has learnt from
  :data:`MIN_LABELS` labels (an untrained model says 0.5 to everybody, "hot");
* a browsing event yields a ``score`` *observation* (features, score, model version) and a
  purchase a ``purchase`` observation (:mod:`streamproc.learning.observations`), published to the
  one-partition learning topic once the customer's state write succeeded (they travel in the
  processor's outbox, so a redelivered batch publishes them again; the learner drops the
  second copy).

The scoring workers never learn. The one learner (:mod:`streamproc.learning.learner`: whichever
worker holds the learning topic's partition) joins the observations with the purchases into labels,
learns, and publishes signed, versioned snapshots to Redis (:mod:`streamproc.learning.modelstore`).
:meth:`IntentScorer.refresh`, called before every batch and by a timer, checks the snapshot's
version key every ``STREAMPROC_MODEL_RELOAD_SECONDS`` and loads a newer snapshot: every worker
serves the learner's latest version at most that long (plus one Redis read) after it is
written. A snapshot whose signature does not verify is refused (never unpickled), logged once
per version, and the worker keeps the model it has. Without a model secret
(``STREAMPROC_MODEL_SECRET``, or the one ``streamproc stack up`` makes) there are no
snapshots: the learner hands its model to the scorer of its own process only (see ``adopt``),
other workers score with an untrained model and store no score.

The snapshot also carries the learner's bandit (a serving copy: posteriors, outcome counts, kept
vectors): given the engine's chooser (``bandit=``), :meth:`IntentScorer.adopt` swaps it in
place, so every worker picks with the bandit learnt from every worker's feedback, and decisions
name its version (``model_versions.bandit``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from streamproc.decisions.bandit import BanditError, ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser
from streamproc.events.codec import Event
from streamproc.learning.modelstore import ModelStore
from streamproc.learning.observations import (
    FEATURE_NAMES,
    FEATURES_ID,
    purchase_record,
    read_from,
    score_record,
)
from streamproc.models.clusters import BehaviourClusters
from streamproc.models.features import EVENT_TYPES, INTENT_NAMES, behaviour_vector, intent_values
from streamproc.models.folded import FoldedIntent, fold
from streamproc.models.intent import IntentModel
from streamproc.models.ltv import LifetimeValue
from streamproc.models.ranking import Recommender
from streamproc.models.relations import ItemRelations
from streamproc.models.snapshot import SnapshotError, load, verify
from streamproc.segments.config import SegmentConfig
from streamproc.settings import Settings
from streamproc.state.profile import Profile

log = logging.getLogger(__name__)

BROWSING = frozenset(EVENT_TYPES)
# Browsing events naming a product: their observations carry it, for the item relations.
ITEM_EVENTS = frozenset({"product_view", "cart_add"})
# Labels learnt before the model's scores are stored on profiles.
MIN_LABELS = 200
# The lifetime-value score (scores.ltv) is the expected spend over this many days.
LTV_HORIZON_DAYS = 365
# What the lifetime-value prediction reads of the profile.
LTV_READS = frozenset({"rfm", "purchases"})

__all__ = ["FEATURES_ID", "FEATURE_NAMES", "IntentScorer", "NoScoring", "ServedModels",
           "snapshot_stats"]


class ServedModels:
    """What the learner's ``serving`` snapshot holds: the models the scoring workers use."""

    def __init__(self, intent: IntentModel, learner: dict[str, int] | None = None,
                 ltv: LifetimeValue | None = None,
                 clusters: BehaviourClusters | None = None,
                 bandit: ThompsonChooser | None = None,
                 relations: ItemRelations | None = None,
                 contextual: dict[str, Any] | None = None) -> None:
        self.intent = intent
        # The learner's figures when it wrote the snapshot (offset, pending labels, ...).
        self.learner = learner or {}
        self.ltv = ltv or LifetimeValue()
        self.clusters = clusters or BehaviourClusters()
        # The decision engine's bandit, without its open expectations (the learner keeps them).
        self.bandit = bandit
        # Item relations, popularity and the product feed, for recommendations.
        self.relations = relations or ItemRelations()
        # The contextual policy as plain data (ContextualChooser.to_state, without pending).
        self.contextual = contextual


def load_served(blob: bytes, secret: bytes) -> tuple[int, ServedModels]:
    """``(version, models)`` of a ``serving`` snapshot; SnapshotError if it is not trusted."""
    version, served = load(blob, secret)
    if not isinstance(served, ServedModels):
        raise SnapshotError(f"the serving snapshot holds a {type(served).__name__}, "
                            "not ServedModels")
    return version, served


class NoScoring:
    """The processor's default: no scores, no observations, no model."""

    async def refresh(self) -> None:
        return None

    def update(self, p: Profile, event: Event,
               changed_parts: Collection[str] | None = None) -> list[dict[str, Any]]:
        return []

    def model_versions(self) -> dict[str, str]:
        return {}


class IntentScorer:
    """Scores browsing events with the served model; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        models: ModelStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_labels: int = MIN_LABELS,
        bandit: ThompsonChooser | None = None,
        recommender: Recommender | None = None,
        contextual: ContextualChooser | None = None,
    ) -> None:
        config = SegmentConfig()
        self.thresholds = (config.intent_warm, config.intent_hot)
        self._folded: FoldedIntent | None = None
        self.model = IntentModel(thresholds=self.thresholds)
        self._ltv_params: dict[str, float] = {}
        self.ltv = LifetimeValue()
        self.clusters = BehaviourClusters()
        # The engine's learning chooser: each served snapshot's bandit replaces its state.
        self.bandit = bandit
        self.bandit_version = 0
        # The engine's contextual policy: each served snapshot's state replaces its own.
        self.contextual = contextual
        # The engine's recommender: each served snapshot's item relations replace its own.
        self.recommender = recommender
        self.version = 0
        self.created_ms = 0
        self.secret = settings.model_secret.encode()
        self.models = models if self.secret else None
        self.reload_s = float(settings.model_reload_seconds)
        self.clock = clock
        self.min_labels = min_labels
        self.reloads = self.refused = 0
        self._next_check = 0.0
        self._refused_version = 0
        if not self.secret:
            log.warning("STREAMPROC_MODEL_SECRET is not set and there is no local stack secret: "
                        "no model snapshots. Only the worker that runs the learner scores with "
                        "a learnt model, and a restart starts from scratch (%s)",
                        settings.model_secret_hint)

    # -- the served model -------------------------------------------------------------------

    @property
    def model(self) -> IntentModel:
        """The served intent model (the learner's, as of its snapshot: never learnt here)."""
        return self._model

    @model.setter
    def model(self, model: IntentModel) -> None:
        # Folded once per served version (streamproc.models.folded): the same scores, bit for
        # bit, at about a third of the River pipeline's cost per event. None: River's own predict.
        self._model = model
        self._folded = fold(model.model, INTENT_NAMES)

    @property
    def ltv(self) -> LifetimeValue:
        """The served lifetime-value model (its parameters taken once, when it is served)."""
        return self._ltv

    @ltv.setter
    def ltv(self, ltv: LifetimeValue) -> None:
        self._ltv = ltv
        self._ltv_params = ltv.params

    def predict_intent(self, values: tuple[float, ...]) -> float:
        """P(purchase) of ``intent_values``, by the folded model (or River's, if not foldable)."""
        folded = self._folded
        if folded is not None:
            return folded.predict(values)
        return self._model.predict_proba_one(dict(zip(INTENT_NAMES, values, strict=True)))

    async def refresh(self) -> None:
        """Load a newer snapshot when one was published (checked every reload period).

        A Redis error propagates (the batch is retried); a refused snapshot does not.
        """
        if self.models is None or self.clock() < self._next_check:
            return
        self._next_check = self.clock() + self.reload_s
        latest = await self.models.version()
        if latest in (self.version, self._refused_version) or latest == 0:
            return
        blob = await self.models.get("serving")
        if blob is None:
            return
        try:
            header, _ = verify(blob, self.secret)
            version, served = load_served(blob, self.secret)
        except SnapshotError as exc:
            self._refused_version = latest
            self.refused += 1
            log.error("refusing the model snapshot v%d in Redis: %s. Keeping the model of v%d "
                      "(check STREAMPROC_MODEL_SECRET: every worker needs the same)",
                      latest, exc, self.version)
            return
        self.adopt(served, version, header.created_ms)

    def adopt(self, served: ServedModels, version: int, created_ms: int) -> None:
        """Serve these models from now on (a reloaded snapshot, or the local learner's)."""
        self.model = served.intent
        self.ltv = getattr(served, "ltv", None) or LifetimeValue()  # older snapshots: priors
        self.clusters = getattr(served, "clusters", None) or BehaviourClusters()
        bandit: ThompsonChooser | None = getattr(served, "bandit", None)
        if self.bandit is not None and bandit is not None:
            # In place (the engine holds this object), in one step that no pick can straddle:
            # a decision's propensity is that of the copy it was picked with.
            self.bandit.take_over(bandit)
            self.bandit_version = version
        contextual: dict[str, Any] | None = getattr(served, "contextual", None)
        if self.contextual is not None and contextual is not None:
            try:
                self.contextual.take_over(ContextualChooser.from_state(contextual))
            except BanditError as exc:
                log.error("the snapshot v%d holds a contextual policy this version cannot "
                          "use (%s): keeping the previous one", version, exc)
        relations: ItemRelations | None = getattr(served, "relations", None)
        if self.recommender is not None and relations is not None:
            self.recommender.relations = relations  # one assignment: a ranking sees one copy
        self.version = version
        self.created_ms = created_ms
        self.reloads += 1
        log.info("serving model v%d: intent learnt from %d labels, progressive AUC %s",
                 version, self.model.n, self.model.stats()["auc"])

    def model_versions(self) -> dict[str, str]:
        """The versions used, for the decision record (none before a model is served)."""
        versions = {"intent": f"v{self.version}"} if self.version else {}
        if self.bandit_version:
            versions["bandit"] = f"v{self.bandit_version}"
        return versions

    def stats(self) -> dict[str, float]:
        """Figures of the served model, for the metrics endpoint and ``streamproc models``.

        ``intent_*`` are the learner's progressive-validation figures as of the served
        snapshot; ``snapshot_age_s`` is the age of that snapshot (-1 before one is served);
        ``bandit_outcomes`` the outcomes (rewards and zeros) the served bandit learnt from.
        """
        m = self.model.stats()
        age = (time.time() * 1000 - self.created_ms) / 1000 if self.created_ms else -1.0
        return {
            "model_version": float(self.version),
            "snapshot_age_s": round(age, 3),
            "intent_auc": float(m["auc"]),
            "intent_logloss": float(m["logloss"]),
            "intent_examples": float(m["n"]),
            "intent_positives": float(m["positives"]),
            "drifts_total": float(m["drifts"]),
            "drift_detections_total": float(m["detections"]),
            "model_reloads_total": float(self.reloads),
            "model_refusals_total": float(self.refused),
            "bandit_version": float(self.bandit_version),
            "bandit_outcomes": float(self.bandit.updates if self.bandit is not None else 0),
        }

    # -- per event ---------------------------------------------------------------------------

    def update(self, p: Profile, event: Event,
               changed_parts: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Score a browsing event; returns the observations for the learning topic.

        Called after ``apply_event``; the observations are published only once the profile
        holding the change is saved. The lifetime value is predicted again only when the
        event changed a part it reads (:data:`LTV_READS`; ``changed_parts`` None: unknown).
        The intent features are taken on every browsing event: each is a training example
        for the learner (and a segment move when the score crosses a tier).
        """
        p.pop("pending_labels", None)  # profiles written before the learner kept them here
        trigger = read_from(event.message)
        rfm, buys = p.get("rfm"), p["purchases"]
        if rfm is not None and buys["orders"] > 0 and (
                changed_parts is None or not LTV_READS.isdisjoint(changed_parts)):
            # Expected spend over the next year (BG/NBD x Gamma-Gamma): read by the value tier.
            p.setdefault("scores", {})["ltv"] = self._ltv.predict_value(
                rfm, buys["total"], buys["orders"], LTV_HORIZON_DAYS, self._ltv_params)
        if event.type in BROWSING:
            x = intent_values(p, event.type, event.ts_ms)
            score = round(self.predict_intent(x), 4)
            if self._model.n >= self.min_labels:
                p.setdefault("scores", {})["intent"] = score
            behaviour = None
            session = p.get("session")
            if session is not None and session["start_ms"] == event.ts_ms:
                # Once per session: the customer's behaviour, to learn and assign clusters.
                behaviour = behaviour_vector(p)
                if self.clusters.ready:
                    cluster_id = self.clusters.assign(behaviour)
                    p["cluster"] = {"id": cluster_id,
                                    "about": self.clusters.describe(cluster_id)}
            product = event.data.get("product") if event.type in ITEM_EVENTS else None
            item = (None if product is None else
                    (product["product_id"], product["category"], event.type == "cart_add"))
            return [score_record(event.customer_id, event.event_id, event.ts_ms, x, score,
                                 self.version, trigger, behaviour, item)]
        if event.type == "purchase":
            lines = [(line["product_id"], line["category"]) for line in event.data["lines"]]
            return [purchase_record(event.customer_id, event.event_id, event.ts_ms, trigger,
                                    rfm, buys["orders"], buys["total"], lines)]
        return []


def snapshot_stats(blob: bytes, secret: bytes) -> dict[str, Any]:
    """What ``streamproc models`` prints: the serving snapshot's header, the intent model's
    progressive-validation figures and the learner's state when it wrote the snapshot.

    Raises SnapshotError when the signature does not verify (nothing is unpickled then).
    """
    header, _ = verify(blob, secret)
    version, served = load_served(blob, secret)
    stats = served.intent.stats()
    return {
        "version": version,
        "created_ms": header.created_ms,
        "bytes": len(blob),
        "n": stats["n"],
        "positives": stats["positives"],
        "negatives": stats["negatives"],
        "auc": stats["auc"],
        "logloss": stats["logloss"],
        "detections": stats["detections"],
        "drifts": stats["drifts"],
        "boosting": stats["boosting"],
        "learner": served.learner,
    }
