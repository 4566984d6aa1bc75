"""Online models on plain dicts: intent, delayed labels, behaviour clusters, lifetime value.

Pure and storage-agnostic (no Kafka, no Redis): ``features`` turns a profile into feature dicts,
``intent`` scores and learns purchase intent (``folded``: the served model as plain floats),
``labels`` and ``join`` join feature snapshots with the purchases that follow (``join``: the
learner's, in event time across partitions),
``clusters`` groups customers by behaviour, ``ltv`` estimates future value, ``relations`` learns
which products go together and ``ranking`` recommends products to a customer with them, and
``snapshot`` signs models for distribution between workers.
"""

from __future__ import annotations

from streamproc.models.clusters import BehaviourClusters, majority, purity
from streamproc.models.features import behaviour_vector, intent_features
from streamproc.models.intent import IntentModel, default_pipeline
from streamproc.models.join import LabelJoin
from streamproc.models.labels import Labelled, PendingLabels
from streamproc.models.ltv import LifetimeValue, predict_value
from streamproc.models.ranking import Recommender
from streamproc.models.relations import ItemRelations
from streamproc.models.snapshot import SnapshotError, SnapshotHeader, dump, load, verify

__all__ = [
    "BehaviourClusters",
    "IntentModel",
    "ItemRelations",
    "LabelJoin",
    "Labelled",
    "LifetimeValue",
    "PendingLabels",
    "Recommender",
    "SnapshotError",
    "SnapshotHeader",
    "behaviour_vector",
    "default_pipeline",
    "dump",
    "intent_features",
    "load",
    "majority",
    "predict_value",
    "purity",
    "verify",
]
