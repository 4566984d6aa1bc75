"""The decision engine: from an event just applied to a profile to decision records.

Pure (no Kafka, no Redis): the processor hands it the profile, the event and the segment moves
the event caused; it returns decision records and the lessons for the learning chooser, which
the processor sends to the one learner (with the profile's outbox, once the profile and its
exposure history are saved: :mod:`streamproc.decisions.lessons`).

For every catalogue trigger the event fires (its type, or entering a segment; plus the
trigger's own ``when``), one decision, in these steps, each leaving its reason in the record:

1. **Slot.** A ``slot_request`` names its slot; other triggers list slots in order of
   preference. A message slot whose channel is closed (no channel consent, quiet hours, the
   day's cap in the customer's timezone) gives way to the next; when all are closed the
   decision is the empty action ``none`` (nothing shown, nothing sent), with the reasons.
2. **Consent.** Without personalisation consent: the slot's neutral action (the processor does
   not even ask for decisions then, :mod:`streamproc.processor`; the HTTP API does, and
   serves the neutral action). A purpose the customer never answered takes its default
   (``consent_defaults``: the purposes ``STREAMPROC_CONSENT_DEFAULTS`` grants).
3. **Experiment.** The slot's experiment assigns an arm (a hash of experiment and customer):
   the control group gets the neutral action; an arm's policy says who chooses.
4. **Candidates.** The slot's personalised actions that are valid now, have the consents they
   list, are not excluded, are eligible, have fresh data (else: not a candidate, and the
   neutral action with that reason if none is left) and are not fresh elsewhere (see
   :mod:`.exposure`). A display slot whose last action is still fresh re-uses it.
5. **Choice.** The chooser (the learning bandit, or uniform) picks one and gives its
   propensity; the exposure history remembers it for feedback, caps and freshness.

A ``recommendation`` action is a candidate only when the engine's
:class:`~streamproc.models.ranking.Recommender` has products for the customer; its decision
carries them, best first, each with its reason, in ``action.params.products`` (at most the
action's ``params.count``, default :data:`RECOMMENDED`).

>>> from streamproc.decisions.catalogue import load_catalogue, default_catalogue_path
>>> from streamproc.decisions.chooser import UniformChooser
>>> from streamproc.state.profile import new_profile
>>> engine = Engine(load_catalogue(default_catalogue_path()), UniformChooser())
>>> p = new_profile("c1")
>>> p["consent"] = {"personalisation": {"granted": True}}
>>> p["cart"] = {"items": {"p1": {"qty": 1, "price": 80.0}}, "value": 80.0, "updated_ms": 0}
>>> src = Source("cart_add", "e1", "c1", "1970-01-01T00:00:00Z", 0, "browsing", 0, 7)
>>> [d["action"]["id"] for d in engine.decide(p, src, {}, []).records]
['cart_reminder']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.days import local_time
from streamproc.decisions import exposure
from streamproc.decisions.catalogue import (
    NONE_ACTION,
    SLOT_REQUEST,
    Action,
    Catalogue,
    CatalogueFile,
    Slot,
    Trigger,
)
from streamproc.decisions.chooser import Chooser, DelayedRewardChooser, Pick, UniformChooser
from streamproc.decisions.contextual import FEATURE_NAMES as CONTEXT_FEATURES
from streamproc.decisions.contextual import ContextualChooser, context_features
from streamproc.decisions.experiments import CONTROL
from streamproc.decisions.experiments import assign as experiment_assign
from streamproc.decisions.guardrails import (
    ago_text,
    channel_problem,
    consent_problem,
    data_problem,
    hours_text,
    params_of,
    reveal_problem,
)
from streamproc.decisions.record import (
    Source,
    action_shown,
    clip_reasons,
    decision_id,
    iso_ms,
    scores_used,
    segments_used,
)
from streamproc.decisions.trust import data_trail, features_trail, trust_problem
from streamproc.errors import StreamprocError
from streamproc.models.ranking import Recommender
from streamproc.settings import PROFILING_PURPOSE
from streamproc.state.consent import granted
from streamproc.state.profile import Profile
from streamproc.state.provenance import DEFAULT_LEVELS, quality

# The type of a timer's synthetic event (streamproc.decisions.timers).
TIMER = "timer"
# The event the HTTP API sends for a decision it served (schemas/events/decision_served).
SERVED = "decision_served"

# Who gets which arm of an experiment: streamproc.decisions.experiments.assign.
Assign = Callable[[str, dict[str, Any]], str]

# What feedback teaches the learning chooser: a click or a conversion is a success, an
# unsubscribe or a dismissal a failure; impressions and opens teach nothing by themselves.
REWARDS = {"click": 1.0, "conversion": 1.0, "unsubscribe": 0.0, "dismiss": 0.0}
NEUTRAL_POLICY, REUSE_POLICY, CASCADE_POLICY = "neutral", "reuse", "cascade"
# The action kind whose decision carries products, and how many when its params do not say.
RECOMMENDATION, RECOMMENDED = "recommendation", 6


def reward_of(kind: str, data: Mapping[str, Any]) -> tuple[float | None, bool]:
    """What a feedback event (``data``) teaches a slot whose reward is ``kind``: the reward
    (None: nothing, wait for another outcome) and whether it is an amount of money.

    >>> reward_of("click", {"outcome": "click"}), reward_of("conversion", {"outcome": "click"})
    ((1.0, False), (None, False))
    >>> reward_of("revenue", {"outcome": "conversion", "revenue": 89.5})
    (89.5, True)
    """
    outcome = data["outcome"]
    if kind == "click" or outcome not in ("click", "conversion"):
        return REWARDS.get(outcome), False
    if outcome == "click":
        return None, False  # a conversion or revenue slot waits for the conversion
    if kind == "revenue":
        return max(0.0, float(data.get("revenue") or 0.0)), True
    return 1.0, False


def region_note(around: Mapping[str, Any], ts_ms: int) -> str:
    """Why the surroundings a decision read are a region's (streamproc.state.regions).

    >>> region_note({"region": "city:oslo", "weather": "snow", "temperature_c": -3.0,
    ...              "ts_ms": 0}, 1_200_000)
    "surroundings from region city:oslo's report 20 min ago (snow, -3.0 °C): fresher than \
the customer's own"
    """
    said = ", ".join(str(v) for v in (around.get("weather"),) if v)
    if isinstance(around.get("temperature_c"), int | float):
        said = ", ".join(filter(None, (said, f"{around['temperature_c']:.1f} °C")))
    return (f"surroundings from region {around['region']}'s report "
            f"{ago_text(ts_ms - around['ts_ms'])}" + (f" ({said})" if said else "")
            + ": fresher than the customer's own")


def vector(features: Mapping[str, float] | None) -> tuple[float, ...] | None:
    """A feature dict as the tuple a lesson carries (None stays None)."""
    if features is None:
        return None
    return tuple(float(features.get(name, 0.0)) for name in CONTEXT_FEATURES)


class UnknownSlotError(StreamprocError):
    """A slot request names a slot the catalogue does not have."""


@dataclass(frozen=True)
class Lesson:
    """What the chooser learns once the decision or feedback is saved with the profile."""

    kind: str  # "expect": a pick awaits its reward; "reward": feedback on a pick
    decision_id: str
    action_id: str
    context: str
    ts_ms: int  # the decision's event time (for a reward too: the learner's wait is from it)
    reward: float = 0.0
    # An expect's feature vector (contextual.FEATURE_NAMES order), for the contextual policy.
    features: tuple[float, ...] | None = None
    # A reward in money (the slot's reward is revenue): the learner caps and scales it.
    revenue: bool = False


@dataclass
class Decided:
    """What one call of the engine decided: decision records, and lessons for the chooser."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lessons: list[Lesson] = field(default_factory=list)


@dataclass
class _Choice:
    action: Action
    pick: Pick
    reasons: list[str]
    candidates: list[str] = field(default_factory=list)
    learning: bool = False
    features: dict[str, float] | None = None  # the context features, when a policy learnt


def _neutral(cat: Catalogue, slot: Slot, *reasons: str) -> _Choice:
    action = cat.action(slot.neutral)
    return _Choice(action, Pick(action.id, 1.0, NEUTRAL_POLICY), list(reasons))


def _occasion(trigger: Trigger, src: Source, data: Mapping[str, Any]) -> str:
    """What happened, in words: ``homepage_hero requested on a home page``."""
    if trigger.after is not None and src.type == TIMER:
        after = trigger.after
        unless = f" without {' or '.join(after.unless)}" if after.unless else ""
        return f"{after.minutes:g} min of event time since the last {after.event}{unless}"
    if trigger.segment_entry is not None:
        return f"entered {trigger.segment_entry[0]} {trigger.segment_entry[1]}"
    if src.type == SLOT_REQUEST:
        page = (data.get("page") or {}).get("page_type")
        return f"{data['slot']} requested" + (f" on a {page} page" if page else "")
    return f"{src.type} event"


def _count(action: Action) -> int:
    """How many products a recommendation action shows: its ``count`` parameter (1 to 50)."""
    count = action.params.get("count", RECOMMENDED)
    return min(50, max(1, int(count))) if isinstance(count, int | float) else RECOMMENDED


class Engine:
    def __init__(
        self,
        catalogue: Catalogue | CatalogueFile,
        chooser: Chooser,
        assign: Assign | None = None,
        uniform: Chooser | None = None,
        consent_defaults: frozenset[str] = frozenset(),
        recommender: Recommender | None = None,
        trust_levels: Mapping[str, int] | None = None,
    ) -> None:
        self.catalogue = catalogue
        # Each source's trust level (STREAMPROC_TRUST_LEVELS), for min_trust and the reasons.
        self.trust_levels = dict(trust_levels if trust_levels is not None else DEFAULT_LEVELS)
        # The purposes granted until withdrawn (STREAMPROC_CONSENT_DEFAULTS).
        self.consent_defaults = consent_defaults
        self.chooser = chooser
        # The contextual policy of slots (or arms) with policy: contextual (the worker's is the
        # learner's, served); without one, those slots fall back to the bucketed chooser.
        self.contextual: ContextualChooser | None = None
        self.uniform: Chooser = uniform or UniformChooser()
        self.assign: Assign = assign or experiment_assign
        # Its relations are the served snapshot's (the scorer swaps them in).
        self.recommender = recommender or Recommender()
        self._recommended: tuple[int, int, int, list[dict[str, str]]] | None = None
        # The catalogue, the event types its triggers fire on, whether any fires on a segment
        # entry (may_fire).
        self._fires: tuple[Catalogue, frozenset[str], bool] | None = None

    def products(self, p: Profile, ts_ms: int, n: int) -> list[dict[str, str]]:
        """The recommender's products for ``p`` (ranked once per decision: the candidate check
        and the decision share them)."""
        memo = self._recommended
        if memo is not None and memo[:3] == (id(p), ts_ms, n):
            return memo[3]
        found = self.recommender.recommend(p, ts_ms, n)
        self._recommended = (id(p), ts_ms, n, found)
        return found

    def may_fire(self, event_type: str, moves: Sequence[Mapping[str, Any]]) -> bool:
        """Whether :meth:`decide` can decide anything for an event of ``event_type`` that
        caused ``moves``: what a trigger reads is its event type, or a segment entry (its
        ``when`` is checked only then). When False, ``decide`` would return nothing and
        change nothing.

        >>> from streamproc.decisions.catalogue import load_catalogue, default_catalogue_path
        >>> from streamproc.decisions.chooser import UniformChooser
        >>> engine = Engine(load_catalogue(default_catalogue_path()), UniformChooser())
        >>> engine.may_fire("cart_add", []), engine.may_fire("survey", [])
        (True, False)
        """
        cat = self.current()
        if self._fires is None or self._fires[0] is not cat:
            events = frozenset(t.event for t in cat.triggers
                               if t.after is None and t.event is not None)
            entries = any(t.after is None and t.segment_entry is not None for t in cat.triggers)
            self._fires = (cat, events, entries)
        _, events, entries = self._fires
        return event_type in events or (entries and any(m.get("to") is not None for m in moves))

    def current(self) -> Catalogue:
        if isinstance(self.catalogue, CatalogueFile):
            return self.catalogue.current()
        return self.catalogue

    # -- decisions ------------------------------------------------------------------------------

    def fired(self, cat: Catalogue, p: Profile, src: Source, data: Mapping[str, Any],
              moves: Sequence[Mapping[str, Any]]) -> list[tuple[Trigger, tuple[str, ...]]]:
        """The triggers this event fires, each with the slots to try."""
        out = []
        entered = {(m["segmentation"], m["to"]) for m in moves if m.get("to") is not None}
        for t in cat.triggers:
            if t.after is not None:
                continue  # a timer: streamproc.decisions.timers fires it
            if t.event is not None and t.event != src.type:
                continue
            if t.segment_entry is not None and t.segment_entry not in entered:
                continue
            if t.when is not None and not t.when(p, src.ts_ms):
                continue
            slots = t.slots
            if t.event == SLOT_REQUEST:
                slot = data["slot"]
                if slot not in cat.slots:
                    raise UnknownSlotError(
                        f"slot_request for unknown slot {slot!r}; the catalogue "
                        f"({cat.version}) has: {', '.join(cat.slots)}")
                slots = (slot,)
            out.append((t, slots))
        return out

    def decide(self, p: Profile, src: Source, data: Mapping[str, Any],
               moves: Sequence[Mapping[str, Any]], now_ms: int | None = None,
               model_versions: Mapping[str, str] | None = None) -> Decided:
        """The decisions the event (already applied to ``p``) calls for; updates ``p``'s
        exposure history."""
        cat = self.current()
        out = Decided()
        fired = self.fired(cat, p, src, data, moves)
        if not fired:
            return out
        exposure.forget_stale(p, src.ts_ms, lambda a: cat.actions[a].freshness_ms
                              if a in cat.actions else None)
        versions = {"catalogue": cat.version, "chooser": self.chooser.version,
                    **(model_versions or {})}
        for trigger, slots in fired:
            record, lesson = self._decide_one(cat, p, src, data, trigger, slots, now_ms,
                                              versions)
            out.records.append(record)
            if lesson is not None:
                out.lessons.append(lesson)
        return out

    def decide_timer(self, p: Profile, src: Source, trigger: Trigger, slots: tuple[str, ...],
                     now_ms: int | None = None,
                     model_versions: Mapping[str, str] | None = None, *,
                     check_when: bool = True, carry: str | None = None,
                     note: str | None = None) -> Decided:
        """The decision of a timer that fired (:mod:`.timers`): a trigger's ``after`` timer
        (its ``when`` checked now), or a step of its cascade (``slots`` = the step's slot,
        ``carry`` = the action of the step before, ``note`` = why this step)."""
        cat = self.current()
        out = Decided()
        if check_when and trigger.when is not None and not trigger.when(p, src.ts_ms):
            return out
        exposure.forget_stale(p, src.ts_ms, lambda a: cat.actions[a].freshness_ms
                              if a in cat.actions else None)
        versions = {"catalogue": cat.version, "chooser": self.chooser.version,
                    **(model_versions or {})}
        record, lesson = self._decide_one(cat, p, src, {}, trigger, slots, now_ms, versions,
                                          carry=carry, note=note)
        out.records.append(record)
        if lesson is not None:
            out.lessons.append(lesson)
        return out

    def _decide_one(self, cat: Catalogue, p: Profile, src: Source, data: Mapping[str, Any],
                    trigger: Trigger, slots: tuple[str, ...], now_ms: int | None,
                    versions: Mapping[str, str], carry: str | None = None,
                    note: str | None = None) -> tuple[dict[str, Any], Lesson | None]:
        did = decision_id(src.customer_id, src.event_id, trigger.id)
        self._recommended = None  # ranked at most once per decision, never reused across
        now = local_time(p, src.ts_ms)
        reasons = [note or f"trigger {trigger.id}: {_occasion(trigger, src, data)}"]
        if now.note:
            reasons.append(now.note)
        slot: Slot | None = None
        for sid in slots:
            problem = channel_problem(p, cat.slots[sid].channel,
                                      cat.caps.get(cat.slots[sid].channel), now,
                                      self.consent_defaults)
            if problem is None:
                slot = cat.slots[sid]
                break
            reasons.append(f"not {sid}: {problem}")
        segments = segments_used(p)
        experiment: dict[str, str] | None = None
        context = ""
        if slot is None:
            slot = cat.slots[slots[0]]
            choice = _Choice(NONE_ACTION, Pick(NONE_ACTION.id, 1.0, NEUTRAL_POLICY),
                             ["every channel closed: nothing shown or sent"])
        else:
            context = f"{slot.id}:{segments.get(cat.context, 'none')}"
            choice, experiment = self._choose(cat, p, src, data, slot, context, did, carry)
        action = choice.action
        params = params_of(p, action, data) if action.params_from else dict(action.params)
        if action.kind == RECOMMENDATION:
            params["products"] = self.products(p, src.ts_ms, _count(action))
        personalised = not action.neutral and action is not NONE_ACTION
        if action is not NONE_ACTION:
            capped = slot.is_message or slot.channel in cat.caps
            picked = choice.pick.policy not in (NEUTRAL_POLICY, REUSE_POLICY, CASCADE_POLICY)
            exposure.record(p, did, action.id, slot.id, context,
                            experiment["arm"] if experiment else "", choice.pick.propensity,
                            src.ts_ms,
                            (exposure.LEARNING if choice.learning else 0) if picked else None,
                            history=cat.history,
                            personalised=personalised and choice.pick.policy != REUSE_POLICY,
                            channel_day=(slot.channel, now.day) if capped else None,
                            reveals=action.reveals_tracking
                            and choice.pick.policy != REUSE_POLICY)
        if personalised and action.reads:
            trail = data_trail(p, action.reads, src.ts_ms, self.trust_levels)
            if trail:
                choice.reasons.append(trail)
        intent = (p.get("scores") or {}).get("intent")
        if intent is not None and segments.get("intent") == "hot":
            choice.reasons.append(f"purchase intent is hot ({intent:.2f})")
        p["quality"] = quality(p, src.ts_ms, self.trust_levels)
        record = {
            "decision_id": did,
            "customer_id": src.customer_id,
            "ts": src.ts,
            "decided_at": iso_ms(now_ms if now_ms is not None else src.ts_ms),
            "trigger": {"type": src.type, "name": trigger.id, "event_id": src.event_id,
                        "topic": src.topic, "partition": src.partition, "offset": src.offset},
            "slot": slot.id,
            "channel": slot.channel,
            "action": action_shown(action, params),
            "personalised": personalised,
            "reasons": clip_reasons([*reasons, *choice.reasons]),
            "segments": segments,
            "scores": scores_used(p),
            "experiment": experiment,
            "propensity": choice.pick.propensity,
            "policy": choice.pick.policy,
            "context": context or None,
            "candidates": choice.candidates,
            "features": ({k: round(v, 4) for k, v in choice.features.items()}
                         if choice.features is not None else None),
            "data_quality": p["quality"]["score"],
            "expires_at": iso_ms(src.ts_ms + slot.expires_ms),
            "model_versions": dict(versions),
            "latency_ms": (max(0, now_ms - src.timestamp_ms)
                           if now_ms is not None and src.timestamp_ms else 0),
        }
        lesson = (Lesson("expect", did, action.id, context, src.ts_ms,
                         features=vector(choice.features)) if choice.learning else None)
        return record, lesson

    def _choose(self, cat: Catalogue, p: Profile, src: Source, data: Mapping[str, Any],
                slot: Slot, context: str, did: str,
                carry: str | None = None) -> tuple[_Choice, dict[str, str] | None]:
        problem = consent_problem(p, PROFILING_PURPOSE, self.consent_defaults)
        if problem:
            return _neutral(cat, slot, f"{problem}: neutral {slot.neutral} instead"), None
        experiment = None
        chooser = self.chooser
        contextual = False
        spec = cat.experiment_for(slot.id)
        if spec is not None:
            arm = self.assign(src.customer_id, spec)
            experiment = {"id": spec["id"], "arm": arm}
            policy = next((a["policy"] for a in spec["arms"] if a["id"] == arm), "neutral")
            if arm == CONTROL or policy == "neutral":
                what = "control group" if arm == CONTROL else f"arm {arm} (neutral)"
                return _neutral(cat, slot, f"experiment {spec['id']}: {what}, neutral "
                                           f"{slot.neutral}"), experiment
            chooser = self.uniform if policy == "uniform" else self.chooser
            contextual = policy == "contextual"
        else:
            contextual = slot.policy == "contextual"
        eligible, excluded, data_issues, reusable = self._candidates(cat, p, src, data, slot,
                                                                     carry)
        carried = next((a for a in eligible if a.id == carry), None)
        if carried is not None:  # a cascade step follows its message up on this channel
            return _Choice(carried, Pick(carried.id, 1.0, CASCADE_POLICY),
                           [f"cascade: {carried.id} followed up by {slot.channel}"],
                           [a.id for a in eligible]), experiment
        if not eligible:
            shown = [*data_issues, *excluded][:5]
            return _neutral(cat, slot, (f"no eligible action for {slot.id}: neutral "
                                        f"{slot.neutral}"), *shown), experiment
        ids = [a.id for a in eligible]
        if reusable is not None:
            action, seen_ms = reusable
            reason = (f"re-used {action.id}: shown in {slot.id} "
                      f"{ago_text(src.ts_ms - seen_ms)}, fresh for "
                      f"{hours_text(action.freshness_ms)}")
            return _Choice(action, Pick(action.id, 1.0, REUSE_POLICY), [reason], ids), experiment
        learning = chooser is self.chooser
        features = context_features(p, src.ts_ms) if learning else None
        pick = None
        fallback: list[str] = []
        sources: list[str] = []  # of the features a contextual pick used
        region = (p.get("surroundings") or {}).get("region")  # streamproc.state.regions
        if contextual and features is not None and self.contextual is not None:
            pick = self.contextual.choose(ids, slot.id, features, bytes.fromhex(did),
                                          f"region {region}" if region else None)
            if pick is None:
                cold = self.contextual.cold(ids, slot.id)
                fallback.append(f"contextual policy still learning ({', '.join(cold)}: fewer "
                                f"than {self.contextual.min_outcomes} outcomes in {slot.id}): "
                                "the bandit picks")
            else:  # the features drove it: say what data they come from
                trail = features_trail(features, self.trust_levels)
                sources += [trail] if trail else []
        if pick is None:
            pick = chooser.choose(ids, context, bytes.fromhex(did))
        chosen = next((a for a in eligible if a.id == pick.action_id), None)
        if chosen is None:  # a chooser bug must not put an ineligible action in front of anyone
            return _neutral(cat, slot, f"chooser {chooser.version} picked "
                                       f"{pick.action_id!r}, not a candidate: neutral"), experiment
        why = [f"{len(ids)} eligible for {slot.id}: {', '.join(ids)}",
               *[*data_issues, *excluded][:4],
               *fallback,
               f"chosen by {pick.policy} (propensity {pick.propensity:.2f}) for {context}",
               *pick.reasons, *sources]
        if region and any(r.startswith("surroundings") for r in chosen.requires):
            why.append(region_note(p["surroundings"], src.ts_ms))
        return _Choice(chosen, pick, why, ids, learning, features), experiment

    def _candidates(self, cat: Catalogue, p: Profile, src: Source, data: Mapping[str, Any],
                    slot: Slot, carry: str | None = None
                    ) -> tuple[list[Action], list[str], list[str], tuple[Action, int] | None]:
        eligible: list[Action] = []
        excluded: list[str] = []
        data_issues: list[str] = []
        reusable: tuple[Action, int] | None = None
        ts = src.ts_ms
        for a in cat.candidates(slot.id):
            if a.valid_from_ms is not None and ts < a.valid_from_ms:
                excluded.append(f"{a.id}: not valid yet")
                continue
            if a.valid_until_ms is not None and ts >= a.valid_until_ms:
                excluded.append(f"{a.id}: no longer valid")
                continue
            missing = [c for c in a.consent if not granted(p, c, self.consent_defaults)]
            if missing:
                excluded.append(f"{a.id}: needs {', '.join(missing)} consent")
                continue
            if a.exclude is not None and a.exclude(p, ts):
                excluded.append(f"{a.id}: excluded")
                continue
            if a.when is not None and not a.when(p, ts):
                continue  # simply not for this customer: not worth a reason
            problem = data_problem(p, a, ts, data)
            if problem is None and a.trust:
                problem = trust_problem(p, a.trust, ts, self.trust_levels, a.max_age_ms)
            if problem is None and a.kind == RECOMMENDATION and not self.products(
                    p, ts, _count(a)):
                problem = "no products to recommend yet (no item relations served)"
            if problem:
                data_issues.append(f"{a.id}: {problem}")
                continue
            seen = None if a.id == carry else exposure.last_seen(p, a.id)
            fresh = seen is not None and ts - seen[0] < a.freshness_ms
            if seen is not None and fresh:
                if slot.is_message or seen[1] != slot.id:
                    excluded.append(f"{a.id}: shown in {seen[1]} {ago_text(ts - seen[0])}, "
                                    f"fresh for {hours_text(a.freshness_ms)}")
                    continue
                if reusable is None or seen[0] > reusable[1]:
                    reusable = (a, seen[0])
            elif a.reveals_tracking:  # showing a fresh one again reveals nothing new
                problem = reveal_problem(p, a.reveal_limit, ts)
                if problem:
                    excluded.append(f"{a.id}: {problem}")
                    continue
            eligible.append(a)
        return eligible, excluded, data_issues, reusable

    def served(self, p: Profile, data: Mapping[str, Any], ts_ms: int) -> list[Lesson]:
        """Record a decision the HTTP API served (a ``decision_served`` event, ``data``) in
        ``p``'s exposure history, as :meth:`decide` records its own; the learning chooser's
        expectation when it picked the action. The API decided on a copy of the profile: the
        worker that owns the customer is the one that writes it."""
        cat = self.current()
        seen, record = data["exposure"], data["decision"]
        exposure.forget_stale(p, ts_ms, lambda a: cat.actions[a].freshness_ms
                              if a in cat.actions else None)
        channel_day = ((record["channel"], local_time(p, ts_ms).day) if seen["capped"]
                       else None)
        flags = seen["flags"]
        shown = cat.actions.get(seen["action_id"])
        exposure.record(p, record["decision_id"], seen["action_id"], seen["slot"],
                        seen["context"], seen["arm"], seen["propensity"], ts_ms, flags,
                        history=cat.history, personalised=seen["personalised"],
                        channel_day=channel_day,
                        reveals=shown is not None and shown.reveals_tracking
                        and seen["personalised"])
        if flags is None or not flags & exposure.LEARNING:
            return []
        logged = record.get("features")
        return [Lesson("expect", record["decision_id"], seen["action_id"], seen["context"],
                       ts_ms, features=vector(logged) if isinstance(logged, dict) else None)]

    # -- feedback -------------------------------------------------------------------------------

    def feedback(self, p: Profile, data: Mapping[str, Any], ts_ms: int) -> list[Lesson]:
        """What a feedback event teaches: a reward for the decision it names, at most once,
        when that decision is still in the exposure history and the learning chooser made it."""
        entry = exposure.find(p, data["decision_id"])
        if entry is None or entry[exposure.FLAGS] & exposure.REWARDED:
            return []
        slot = self.current().slots.get(str(entry[exposure.CONTEXT]).split(":", 1)[0])
        reward, revenue = reward_of(slot.reward if slot is not None else "click", data)
        if reward is None:
            return []
        entry[exposure.FLAGS] |= exposure.REWARDED
        if not entry[exposure.FLAGS] & exposure.LEARNING:
            return []
        return [Lesson("reward", data["decision_id"], entry[exposure.ACTION],
                       entry[exposure.CONTEXT], entry[exposure.TS], reward, revenue=revenue)]

    def learn(self, lessons: Sequence[Lesson]) -> None:
        """Apply lessons whose decisions or feedback are saved: ``expect`` and ``reward`` for a
        :class:`~.chooser.DelayedRewardChooser`; for another chooser, a reward's ``learn``
        (it has no pick to wait for)."""
        chooser = self.chooser
        if isinstance(chooser, DelayedRewardChooser):
            for lesson in lessons:
                if lesson.kind == "expect":
                    chooser.expect(lesson.decision_id, lesson.action_id, lesson.context,
                                   lesson.ts_ms)
                else:
                    chooser.reward(lesson.decision_id, lesson.reward)
            return
        for lesson in lessons:
            if lesson.kind != "expect":
                chooser.learn(lesson.action_id, lesson.context, lesson.reward)

    def advance(self, watermark_ms: int) -> int:
        """Close the chooser's expectations older than its wait as zero rewards (none for a
        chooser that does not wait for its rewards)."""
        chooser = self.chooser
        return chooser.advance(watermark_ms) if isinstance(chooser, DelayedRewardChooser) else 0
