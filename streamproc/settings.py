"""One frozen Settings object, read from ``STREAMPROC_*`` environment variables here and only here.

Every other module receives a :class:`Settings` (or the values it needs); nothing else reads the
environment. The defaults point at the local stack (``streamproc stack up``), and so does the
one file read here: without ``STREAMPROC_MODEL_SECRET``, the model secret is the one that
``streamproc stack up`` made in ``<STREAMPROC_STACK_DIR>/model-secret`` (if it did).

Each value remembers where it came from (:attr:`Settings.sources`: ``environment`` or
``default``), which ``streamproc settings`` shows beside the values in force.

>>> s = Settings.from_env({"STREAMPROC_PARTITIONS": "4", "STREAMPROC_LOG_LEVEL": "Warning"})
>>> s.partitions, s.topics.browsing, s.log_level
(4, 'streamproc.browsing', 'warn')
>>> s.sources["PARTITIONS"], s.sources["BATCH_SIZE"]
('environment', 'default')
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from streamproc.errors import ConfigError, masked_url

ENV_PREFIX = "STREAMPROC_"
# The model secret that `streamproc stack up` makes once in the stack's directory: the local
# commands sign and verify model snapshots with it when STREAMPROC_MODEL_SECRET is not set.
MODEL_SECRET_FILE = "model-secret"


@dataclass(frozen=True)
class Topics:
    """Kafka topic names. Inputs are keyed by customer id; so are decisions and segments."""

    browsing: str
    purchases: str
    profiles: str
    feedback: str
    decisions: str
    segments: str
    deadletter: str
    # Observations from the scoring workers to the one learner: one partition (see learner.py).
    learning: str
    # The product feed (keyed by product id), read by the learner: one partition.
    products: str

    @classmethod
    def with_prefix(cls, prefix: str, overrides: Mapping[str, str] | None = None) -> Topics:
        overrides = overrides or {}
        names = {f.name: overrides.get(f.name) or f"{prefix}{f.name}" for f in fields(cls)}
        return cls(**names)

    @property
    def inputs(self) -> tuple[str, str, str, str]:
        return (self.browsing, self.purchases, self.profiles, self.feedback)

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.decisions, self.segments, self.deadletter)

    def all(self) -> tuple[str, ...]:
        return self.inputs + self.outputs + (self.learning, self.products)

    def partitions_of(self, name: str, partitions: int) -> int:
        """The partition count a topic is created with: the learning and products topics (read
        by the one learner) have one."""
        return 1 if name in (self.learning, self.products) else partitions


# (name, environment variable, default, help) of every setting: the one table that the CLI's
# `--help`, the docs test and the compose-file check read.
SETTING_DOCS: tuple[tuple[str, str, str], ...] = (
    ("KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, comma separated host:port"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0",
     "Redis URL (redis:// or rediss://, with /db); a Redis Cluster: redis+cluster://host:port"
     "[,host:port...] (or rediss+cluster://), or REDIS_CLUSTER=true"),
    ("REDIS_CLUSTER", "false",
     "true: REDIS_URL names a node of a Redis Cluster (the cluster client; db 0 only)"),
    ("REDIS_CLUSTER_PORT", "7000",
     "first port of the local Redis Cluster of `streamproc stack up --redis-cluster N` (2N "
     "nodes on consecutive ports)"),
    ("APP_ID", "streamproc", "Faust app id = Kafka consumer group of the workers"),
    ("TOPIC_PREFIX", "streamproc.", "prefix of every topic name"),
    ("TOPIC_BROWSING", "", "full name of the browsing topic (overrides the prefix)"),
    ("TOPIC_PURCHASES", "", "full name of the purchases topic"),
    ("TOPIC_PROFILES", "", "full name of the profiles topic"),
    ("TOPIC_FEEDBACK", "", "full name of the feedback topic"),
    ("TOPIC_DECISIONS", "", "full name of the decisions topic"),
    ("TOPIC_SEGMENTS", "", "full name of the segments topic"),
    ("TOPIC_DEADLETTER", "", "full name of the dead-letter topic"),
    ("PARTITIONS", "12", "partitions of every topic created by streamproc"),
    ("REPLICATION_FACTOR", "1", "replication factor of topics created by streamproc"),
    ("MIN_INSYNC_REPLICAS", "1",
     "min.insync.replicas of topics created by streamproc: a write (acks=all) succeeds only once "
     "this many replicas have it; at most REPLICATION_FACTOR (with 3, use 2)"),
    ("MAX_EVENT_BYTES", "65536", "larger input messages go to the dead-letter topic"),
    ("BATCH_SIZE", "500", "most events a worker processes in one batch"),
    ("BATCH_WAIT_MS", "5", "longest wait for a batch to fill, in milliseconds"),
    ("BATCH_BEHIND_MS", "200",
     "a worker whose newest event was produced longer ago than this many milliseconds, with "
     "10 or more messages waiting in its partition, is behind, and waits BATCH_BEHIND_WAIT_MS "
     "instead for fuller batches"),
    ("BATCH_BEHIND_WAIT_MS", "50",
     "longest wait for a batch to fill while the worker is behind, in milliseconds"),
    ("FETCH_MAX_RECORDS", "0",
     "most messages a worker's consumer takes from one fetch (0: all the fetch holds); each "
     "fetch reaches the worker's batch buffer in one step"),
    ("FETCH_MAX_WAIT_MS", "100",
     "longest a worker's fetch waits at the broker for new messages, in milliseconds; a "
     "consumer has one fetch at a time per broker, so a partition read to the end waits for "
     "the one in flight: a long wait stalls a worker catching up while some partitions are idle"),
    ("DEDUPE_WINDOW", "32", "event ids remembered per customer against producer duplicates"),
    ("STATE_COMPRESSION", "zstd",
     "how profiles are stored in Redis: zstd (a shipped dictionary; smallest, fastest), zlib or "
     "none"),
    ("AFFINITY_HALF_LIFE_DAYS", "14", "days after which a category/brand affinity halves"),
    ("ACTIVITY_DAYS", "30", "days of daily activity counts kept for windowed segment rules"),
    ("CUSTOMER_TTL_DAYS", "0", "expire customers inactive this many days; 0 keeps them"),
    ("SEGMENT_RULES", "", "YAML or JSON file of custom segments, reloaded when it changes"),
    ("SEGMENT_HISTORY", "10", "segment moves kept on each profile"),
    ("INTENT_HORIZON_MINUTES", "30",
     "a browsing moment counts as buying intent if a purchase follows within this many minutes"),
    ("MODEL_SECRET", "",
     "shared secret signing model snapshots in Redis, the same everywhere; unset or empty: "
     "the local stack's STACK_DIR/model-secret (made by `streamproc stack up`), else no "
     "snapshots"),
    ("MODEL_SNAPSHOT_SECONDS", "30",
     "seconds between two snapshots of the learner's models and bandit"),
    ("WEB_PORT", "0", "port of the worker's web server; 0 disables it"),
    ("LOG_LEVEL", "info", "worker log level: debug, info, warn (or warning), error; any case"),
    ("STACK_DIR", ".stack", "data, logs and pid files of the local stack (git-ignored)"),
    ("CACHE_DIR", "~/.cache/streamproc", "downloaded Kafka jars, kept across stacks"),
    ("KAFKA_CONTROLLER_PORT", "9093", "KRaft controller port of the local broker"),
    ("KAFKA_HEAP", "1g", "Java heap of the local broker (-Xmx)"),
    ("KAFKA_BROKERS", "1",
     "brokers the local stack runs (`stack up --kafka-brokers N`): N KRaft brokers, each also a "
     "controller of an N-voter quorum"),
    ("KAFKA_EXTRA_PORT", "0",
     "first port of the local stack's brokers 2 to N: broker n listens on this + 2(n-2), its "
     "controller on the port above; 0: the Kafka port + 8"),
    ("BANDIT_EXPLORATION", "0.1",
     "share of bandit picks spread evenly over the eligible actions (each gets at least "
     "this / their number)"),
    ("BANDIT_REWARD_WAIT_MINUTES", "1440",
     "a bandit decision without a reward after this many minutes of event time counts as 0"),
    ("CONTEXTUAL_ALPHA", "0.1",
     "width of the contextual policy's uncertainty bonus (LinUCB alpha; 0: greedy between "
     "its exploration picks)"),
    ("CONTEXTUAL_MIN_OUTCOMES", "30",
     "outcomes each candidate needs in a slot before the contextual policy picks there; until "
     "then the bucketed bandit does"),
    ("REGION_CONTEXT_SECONDS", "30",
     "how often workers and the HTTP API read the regions' context (region context_updates) "
     "from Redis: the bound on deciding with an older report; 0: before every batch"),
    ("SESSION_TIMEOUT_S", "30",
     "seconds before the group gives a silent (crashed) worker's partitions to the others"),
    ("WEB_HOST", "127.0.0.1", "address the worker's web server binds (0.0.0.0 in containers)"),
    ("LEARNER_WEB_PORT", "0",
     "port of `streamproc learner`'s web server (/metrics, /livez; on WEB_HOST); 0 disables it"),
    ("LOG_FORMAT", "text", "log lines of the worker and the CLI: text, or json (one a line)"),
    ("CATALOGUE", "",
     "decision catalogue (YAML or JSON), reloaded when it changes; empty: the shipped one"),
    ("TOPIC_LEARNING", "", "full name of the learning topic (one partition: model observations)"),
    ("TOPIC_PRODUCTS", "", "full name of the product feed topic (one partition, keyed by product "
     "id)"),
    ("LABEL_LATENESS_SECONDS", "300",
     "event-time disorder within one partition the learner waits out before labelling"),
    ("MODEL_RELOAD_SECONDS", "5", "how often scoring workers check for a newer model snapshot"),
    ("MODEL_SNAPSHOT_LABELS", "5000", "the learner also snapshots after this many new labels"),
    ("LABEL_IDLE_SECONDS", "21600",
     "event time the learner waits for a lagging or idle partition before labelling anyway"),
    ("TIMER_LATENESS_SECONDS", "60",
     "event-time disorder waited out before a timer fires (cart abandonment, cascades)"),
    ("TIMERS_PER_BATCH", "1000",
     "most timers fired per partition after a batch (the rest after the next); 0: none"),
    ("PROFILE_CACHE", "10000",
     "customers whose profile a worker keeps parsed after writing it (about 20 KB each); 0: "
     "none"),
    ("SKIP_UNCHANGED", "true",
     "run a segmentation, custom rule, model feature set or decision trigger only when an "
     "event changed a part of the profile it reads (true); false runs them all on every "
     "event, with the same outputs: to rule the skipping out when debugging"),
    ("LEARNER", "worker",
     "where the learner runs: worker (in every worker, one of them learns) or off (in "
     "`streamproc learner`, its own process; needs STREAMPROC_MODEL_SECRET)"),
    ("PARTITION_CHECK", "deadletter",
     "an input message not on its key's murmur2 partition (a producer partitioning keys "
     "differently, e.g. librdkafka without partitioner=murmur2_random): deadletter (reason "
     "wrong_partition), warn (logged and counted, processed; while producers migrate) or off"),
    ("LEARNER_REPLAY_HOURS", "24",
     "a learner with no snapshot starts this many hours back on the learning topic (at least "
     "the label horizon plus lateness); 0: from the topic's start"),
    ("API_HOST", "127.0.0.1", "address `streamproc serve` binds (0.0.0.0 in containers)"),
    ("API_PORT", "8080", "port of `streamproc serve` (the HTTP API)"),
    ("API_DEADLINE_MS", "50",
     "a decide answers within this many milliseconds: past it, the slot's neutral action"),
    ("API_EXPOSURE_WAIT_MS", "0",
     "a personalised decide waits at most this long (never past API_DEADLINE_MS) for Kafka to "
     "confirm its exposure event (exposure recorded) before answering with exposure pending; "
     "0: answer at once"),
    ("API_KEYS", "",
     "write keys of the event, decide and feedback endpoints, as site=key pairs separated by "
     "commas; empty: no key needed, allowed only while API_HOST is a loopback address"),
    ("API_ADMIN_TOKEN", "",
     "bearer token of GET and DELETE /v1/customers/{id}; empty: those endpoints are off"),
    ("API_READ_TOKEN", "",
     "bearer token of the dashboard's data (/v1/kpis...; the admin token works too); with "
     "neither set, that data is open only while API_HOST is a loopback address"),
    ("API_ORIGINS", "",
     "browser origins allowed by CORS, comma separated (https://shop.example.com); empty: none"),
    ("API_MAX_BODY_BYTES", "1048576", "largest request body the API reads (413 beyond)"),
    ("API_RATE", "200",
     "requests per second allowed per write key (per client address without keys); 0: no limit"),
    ("API_CLOCK_TOLERANCE_S", "300",
     "an event's own ts further than this from the API's receive time is replaced by it"),
    ("STARTUP_TIMEOUT_S", "30",
     "seconds a starting worker waits for Redis and Kafka to answer before it exits (code 2) "
     "with the reason"),
    ("REDIS_REPLICA_WAIT_MS", "500",
     "on a Redis Cluster, how long a batch's writes wait (WAIT) for the replicas of their "
     "primary before its offsets are committed: a primary's failure then loses no write "
     "acknowledged to a worker; a replica slower than this is logged, not waited for; 0: off"),
    ("REDIS_OUTAGE_LEAVE_S", "60",
     "seconds a running worker retries an unreachable Redis before it leaves the group and "
     "exits (code 75) so that another worker takes its partitions; 0: never"),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
     "how every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL "
     "over TLS)"),
    ("KAFKA_SASL_MECHANISM", "PLAIN",
     "SASL mechanism with SASL_PLAINTEXT or SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    ("KAFKA_SASL_USERNAME", "", "SASL user name (needed with SASL_PLAINTEXT and SASL_SSL)"),
    ("KAFKA_SASL_PASSWORD", "", "SASL password (needed with SASL_PLAINTEXT and SASL_SSL)"),
    ("KAFKA_SSL_CAFILE", "",
     "PEM file of the CA(s) the brokers' certificates are checked against (SSL, SASL_SSL); "
     "empty: the system's CAs"),
    ("KAFKA_SSL_CERTFILE", "",
     "PEM file of this client's certificate (mutual TLS); needs KAFKA_SSL_KEYFILE"),
    ("KAFKA_SSL_KEYFILE", "", "PEM file of this client's private key (mutual TLS)"),
    ("KAFKA_SSL_KEY_PASSWORD", "", "password of KAFKA_SSL_KEYFILE when it is encrypted"),
    ("KAFKA_SSL_CHECK_HOSTNAME", "true",
     "check that a broker's certificate names the host connected to (true or false)"),
    ("REDIS_SSL_CAFILE", "",
     "PEM file of the CA(s) the Redis server's certificate is checked against (rediss:// URLs); "
     "empty: the system's CAs"),
    ("REDIS_SSL_CERTFILE", "",
     "PEM file of this client's certificate, for a Redis that asks for one (tls-auth-clients); "
     "needs REDIS_SSL_KEYFILE"),
    ("REDIS_SSL_KEYFILE", "", "PEM file of this client's private key (rediss:// mutual TLS)"),
    ("MAX_FUTURE_SKEW_S", "300",
     "an event dated more than this many seconds after its Kafka record's timestamp goes to "
     "the dead-letter topic (reason future_timestamp): one wrong clock must not move the "
     "event time of timers and labels for everyone; 0: no bound (simulated clocks that run "
     "ahead, `streamproc simulate --accelerated`)"),
    ("KPI_DAYS", "90", "days of KPI counters kept in Redis (each day's hash expires after)"),
    ("ATTRIBUTION_HOURS", "72",
     "a purchase this long after a decision (personalised or neutral) is attributed to it"),
    ("COMPACT_AFTER_DAYS", "7",
     "the decisions, segments and dead-letter topics keep every record at least this many days "
     "(min.compaction.lag.ms); older ones are compacted to each customer's latest, and an "
     "erased customer's are removed within this plus a day (max.compaction.lag.ms)"),
    ("TOMBSTONE_HOURS", "24",
     "hours an erasure's tombstone stays on those topics once compacted (delete.retention.ms), "
     "for their consumers to see it"),
    ("ERASURE_SUPPRESS_DAYS", "30",
     "days after an erasure during which the customer's events dated (or produced) before it "
     "are suppressed, not profiled again (redelivery, retries, replays); 0: no suppression"),
    ("CONSENT_DEFAULTS", "personalisation=denied,email=denied,sms=denied,push=denied,"
     "call_centre=denied",
     "each consent purpose's answer until the customer gives one, as purpose=granted|denied "
     "pairs separated by commas (a purpose not named: denied); without personalisation "
     "consent a customer is not profiled (no scores, segments, learning or decisions)"),
    ("TRUST_LEVELS", "declared=3,observed=3,crm=2,inferred=1",
     "trust level (0 to 100) of each source of profile data, as source=level pairs separated "
     "by commas, every source given: declared (the customer said it), observed (their own "
     "events), crm, inferred (derived from behaviour); an attribute stored before sources were "
     "kept is 0. A catalogue's min_trust compares with these (docs/bandit.md)"),
    ("TRUST_CONFLICT_DAYS", "30",
     "an attribute that one source sets to another value than a different source gave less "
     "than this many days before is contradictory (weak for min_trust) until its next update"),
    ("RECS_SENSITIVE_CATEGORIES", "adult,health,pharmacy",
     "product categories never recommended, comma separated"),
    ("RECS_REPLENISHABLE_CATEGORIES", "grocery,beauty,baby",
     "product categories bought again: a product of another category already bought is not "
     "recommended again"),
)

# Secrets that can also be read from a file named by STREAMPROC_<NAME>_FILE, as Docker and
# Kubernetes secrets are mounted (/run/secrets/...): the value stays out of the environment,
# which `docker inspect`, /proc/<pid>/environ and crash reports show.
SECRET_FILES = ("MODEL_SECRET", "REDIS_URL", "API_KEYS", "API_ADMIN_TOKEN", "API_READ_TOKEN",
                "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD")
FILE_SUFFIX = "_FILE"
KNOWN_VARIABLES = frozenset(
    [ENV_PREFIX + name for name, _, _ in SETTING_DOCS]
    + [ENV_PREFIX + name + FILE_SUFFIX for name in SECRET_FILES])
_DEFAULTS = {name: default for name, default, _ in SETTING_DOCS}

# Where a value came from, as Settings.sources records it per setting name.
FROM_ENVIRONMENT = "environment"
FROM_DEFAULT = "default"
# Settings shown masked by `streamproc settings`.
SECRETS = frozenset({"MODEL_SECRET", "API_KEYS", "API_ADMIN_TOKEN", "API_READ_TOKEN",
                     "KAFKA_SASL_PASSWORD",
                     "KAFKA_SSL_KEY_PASSWORD"})
# The purposes a consent_update names (schemas/events/consent_update.schema.json). Profiling a
# customer (their profile beyond the consent record, scores, segments, learning, decisions)
# needs PROFILING_PURPOSE; each message channel needs its own.
CONSENT_PURPOSES = ("personalisation", "email", "sms", "push", "call_centre")
PROFILING_PURPOSE = "personalisation"
# The sources of profile data (streamproc.state.provenance), each with a trust level.
TRUST_SOURCES = ("declared", "crm", "inferred", "observed")
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

LOG_LEVELS = ("debug", "info", "warn", "error", "crit")
# Other spellings people write for a log level (Python's and syslog's names), case-insensitive.
_LOG_LEVEL_SPELLINGS = {"warning": "warn", "critical": "crit", "fatal": "crit", "err": "error"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def normalise_log_level(text: str) -> str:
    """The canonical name of a log level, whatever its case or spelling.

    >>> normalise_log_level("WARNING"), normalise_log_level("warn"), normalise_log_level("Info")
    ('warn', 'warn', 'info')
    """
    level = text.strip().lower()
    return _LOG_LEVEL_SPELLINGS.get(level, level)


def _learner_place(text: str) -> str:
    """``worker`` or ``off``; a boolean reads as on (in the worker) or off."""
    value = text.strip().lower()
    return "worker" if value in _TRUE else "off" if value in _FALSE else value


def unknown_setting_problems(names: list[str]) -> list[str]:
    """One line per unknown ``STREAMPROC_`` name, with the nearest known one when there is one.

    >>> unknown_setting_problems(["STREAMPROC_REDIS_ULR"])
    ['unknown setting STREAMPROC_REDIS_ULR: did you mean STREAMPROC_REDIS_URL?']
    """
    out = []
    for name in names:
        near = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1, cutoff=0.75)
        out.append(f"unknown setting {name}: did you mean {near[0]}?" if near else
                   f"unknown setting {name}: `streamproc settings` lists the known ones")
    return out


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _DEFAULTS["KAFKA_BOOTSTRAP"]
    # Shown masked (its password) by shown_values and masked_url, never by repr.
    redis_url: str = field(default=_DEFAULTS["REDIS_URL"], repr=False)
    redis_cluster: bool = False
    redis_cluster_port: int = 7000
    app_id: str = _DEFAULTS["APP_ID"]
    topics: Topics = field(default_factory=lambda: Topics.with_prefix("streamproc."))
    partitions: int = 12
    replication_factor: int = 1
    min_insync_replicas: int = 1
    max_event_bytes: int = 65536
    batch_size: int = 500
    batch_wait_ms: int = 5
    batch_behind_ms: int = 200
    batch_behind_wait_ms: int = 50
    fetch_max_records: int = 0
    fetch_max_wait_ms: int = 100
    dedupe_window: int = 32
    state_compression: str = "zstd"
    affinity_half_life_days: float = 14.0
    activity_days: int = 30
    customer_ttl_days: int = 0
    segment_rules: Path | None = None
    segment_history: int = 10
    intent_horizon_minutes: int = 30
    model_secret: str = field(default="", repr=False)
    # Where the secret came from when it is the local stack's file (None: the environment).
    model_secret_file: Path | None = None
    model_snapshot_seconds: int = 30
    web_port: int = 0
    log_level: str = "info"
    stack_dir: Path = Path(".stack")
    cache_dir: Path = Path("~/.cache/streamproc").expanduser()
    kafka_controller_port: int = 9093
    kafka_heap: str = "1g"
    kafka_brokers: int = 1
    kafka_extra_port: int = 0
    bandit_exploration: float = 0.1
    bandit_reward_wait_minutes: int = 1440
    contextual_alpha: float = 0.1
    contextual_min_outcomes: int = 30
    region_context_seconds: int = 30
    session_timeout_s: int = 30
    web_host: str = "127.0.0.1"
    learner_web_port: int = 0
    log_format: str = "text"
    catalogue: Path | None = None
    label_lateness_seconds: int = 300
    model_reload_seconds: int = 5
    model_snapshot_labels: int = 5000
    label_idle_seconds: int = 21600
    timer_lateness_seconds: int = 60
    timers_per_batch: int = 1000
    profile_cache: int = 10000
    skip_unchanged: bool = True
    learner: str = "worker"
    partition_check: str = "deadletter"
    learner_replay_hours: int = 24
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_deadline_ms: int = 50
    api_exposure_wait_ms: int = 0
    api_keys: str = field(default="", repr=False)
    api_admin_token: str = field(default="", repr=False)
    api_read_token: str = field(default="", repr=False)
    api_origins: str = ""
    api_max_body_bytes: int = 1_048_576
    api_rate: int = 200
    api_clock_tolerance_s: int = 300
    startup_timeout_s: float = 30.0
    redis_outage_leave_s: float = 60.0
    redis_replica_wait_ms: int = 500
    # Kafka security: every client's options come from streamproc.kafka_options.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: str = field(default="", repr=False)
    kafka_ssl_check_hostname: bool = True
    redis_ssl_cafile: Path | None = None
    redis_ssl_certfile: Path | None = None
    redis_ssl_keyfile: Path | None = None
    max_future_skew_s: int = 300
    kpi_days: int = 90
    attribution_hours: int = 72
    compact_after_days: int = 7
    tombstone_hours: int = 24
    erasure_suppress_days: int = 30
    consent_defaults: str = _DEFAULTS["CONSENT_DEFAULTS"]
    trust_levels: str = _DEFAULTS["TRUST_LEVELS"]
    trust_conflict_days: float = 30.0
    recs_sensitive_categories: str = "adult,health,pharmacy"
    recs_replenishable_categories: str = "grocery,beauty,baby"
    # Where each value came from, by setting name (KAFKA_BOOTSTRAP ...): FROM_ENVIRONMENT,
    # FROM_DEFAULT, or another source a fallback names (e.g. a file). Not part of equality.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``STREAMPROC_*`` variables; unknown ones are an error (typos)."""
        env = os.environ if environ is None else environ
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in KNOWN_VARIABLES)
        if unknown:
            raise ConfigError("; ".join(unknown_setting_problems(unknown)))
        from_files = read_secret_files(env)
        env = {**env, **{ENV_PREFIX + name: value for name, (value, _) in from_files.items()}}
        sources = {name: FROM_ENVIRONMENT if env.get(ENV_PREFIX + name, "").strip()
                   else FROM_DEFAULT for name in _DEFAULTS}
        # Taken as they are, not stripped: an empty prefix and a secret's spaces count.
        if ENV_PREFIX + "TOPIC_PREFIX" in env:
            sources["TOPIC_PREFIX"] = FROM_ENVIRONMENT
        if env.get(ENV_PREFIX + "MODEL_SECRET"):
            sources["MODEL_SECRET"] = FROM_ENVIRONMENT
        for name, (_, path) in from_files.items():
            sources[name] = f"file {path} ({ENV_PREFIX}{name}{FILE_SUFFIX})"

        def get(name: str) -> str:
            return env.get(ENV_PREFIX + name, "").strip() or _DEFAULTS[name]

        stack_dir = Path(get("STACK_DIR")).expanduser()
        # Not stripped: a secret is used byte for byte. An explicit one always wins.
        secret = env.get(ENV_PREFIX + "MODEL_SECRET", "")
        secret_file = None
        if not secret:
            secret = read_model_secret(stack_dir / MODEL_SECRET_FILE)
            secret_file = stack_dir / MODEL_SECRET_FILE if secret else None
            if secret_file is not None:
                sources["MODEL_SECRET"] = f"file {secret_file}"
        overrides = {
            f.name: env.get(f"{ENV_PREFIX}TOPIC_{f.name.upper()}", "").strip()
            for f in fields(Topics)
        }
        settings = cls(
            kafka_bootstrap=get("KAFKA_BOOTSTRAP"),
            redis_url=get("REDIS_URL"),
            redis_cluster=_bool(get, "REDIS_CLUSTER"),
            redis_cluster_port=_int(get, "REDIS_CLUSTER_PORT", 1, 65_535 - 100),
            app_id=get("APP_ID"),
            topics=Topics.with_prefix(env.get(ENV_PREFIX + "TOPIC_PREFIX", "streamproc."),
                                      overrides),
            partitions=_int(get, "PARTITIONS", 1, 10_000),
            replication_factor=_int(get, "REPLICATION_FACTOR", 1, 16),
            min_insync_replicas=_int(get, "MIN_INSYNC_REPLICAS", 1, 16),
            max_event_bytes=_int(get, "MAX_EVENT_BYTES", 256, 16 * 1024 * 1024),
            batch_size=_int(get, "BATCH_SIZE", 1, 100_000),
            batch_wait_ms=_int(get, "BATCH_WAIT_MS", 1, 60_000),
            batch_behind_ms=_int(get, "BATCH_BEHIND_MS", 0, 3_600_000),
            batch_behind_wait_ms=_int(get, "BATCH_BEHIND_WAIT_MS", 1, 60_000),
            fetch_max_records=_int(get, "FETCH_MAX_RECORDS", 0, 1_000_000),
            fetch_max_wait_ms=_int(get, "FETCH_MAX_WAIT_MS", 1, 60_000),
            dedupe_window=_int(get, "DEDUPE_WINDOW", 0, 10_000),
            state_compression=get("STATE_COMPRESSION").lower(),
            affinity_half_life_days=_float(get, "AFFINITY_HALF_LIFE_DAYS", 0.01, 3650),
            activity_days=_int(get, "ACTIVITY_DAYS", 1, 400),
            customer_ttl_days=_int(get, "CUSTOMER_TTL_DAYS", 0, 36500),
            segment_rules=Path(get("SEGMENT_RULES")).expanduser() if get("SEGMENT_RULES")
            else None,
            segment_history=_int(get, "SEGMENT_HISTORY", 0, 1000),
            intent_horizon_minutes=_int(get, "INTENT_HORIZON_MINUTES", 1, 10_080),
            model_secret=secret,
            model_secret_file=secret_file,
            model_snapshot_seconds=_int(get, "MODEL_SNAPSHOT_SECONDS", 1, 86_400),
            web_port=_int(get, "WEB_PORT", 0, 65535),
            log_level=normalise_log_level(get("LOG_LEVEL")),
            stack_dir=stack_dir,
            cache_dir=Path(get("CACHE_DIR")).expanduser(),
            kafka_controller_port=_int(get, "KAFKA_CONTROLLER_PORT", 1, 65535),
            kafka_heap=get("KAFKA_HEAP"),
            kafka_brokers=_int(get, "KAFKA_BROKERS", 1, 9),
            kafka_extra_port=_int(get, "KAFKA_EXTRA_PORT", 0, 65535),
            bandit_exploration=_float(get, "BANDIT_EXPLORATION", 0.001, 1.0),
            bandit_reward_wait_minutes=_int(get, "BANDIT_REWARD_WAIT_MINUTES", 1, 525_600),
            contextual_alpha=_float(get, "CONTEXTUAL_ALPHA", 0.0, 10.0),
            contextual_min_outcomes=_int(get, "CONTEXTUAL_MIN_OUTCOMES", 0, 1_000_000),
            region_context_seconds=_int(get, "REGION_CONTEXT_SECONDS", 0, 3600),
            # Kafka brokers accept 6 s to 30 min by default (group.min/max.session.timeout.ms).
            session_timeout_s=_int(get, "SESSION_TIMEOUT_S", 6, 1800),
            web_host=get("WEB_HOST"),
            learner_web_port=_int(get, "LEARNER_WEB_PORT", 0, 65535),
            log_format=get("LOG_FORMAT").lower(),
            catalogue=Path(get("CATALOGUE")).expanduser() if get("CATALOGUE") else None,
            label_lateness_seconds=_int(get, "LABEL_LATENESS_SECONDS", 0, 7 * 86_400),
            model_reload_seconds=_int(get, "MODEL_RELOAD_SECONDS", 1, 3600),
            model_snapshot_labels=_int(get, "MODEL_SNAPSHOT_LABELS", 1, 10_000_000),
            label_idle_seconds=_int(get, "LABEL_IDLE_SECONDS", 0, 30 * 86_400),
            timer_lateness_seconds=_int(get, "TIMER_LATENESS_SECONDS", 0, 7 * 86_400),
            timers_per_batch=_int(get, "TIMERS_PER_BATCH", 0, 100_000),
            profile_cache=_int(get, "PROFILE_CACHE", 0, 10_000_000),
            skip_unchanged=_bool(get, "SKIP_UNCHANGED"),
            learner=_learner_place(get("LEARNER")),
            partition_check=get("PARTITION_CHECK").lower(),
            learner_replay_hours=_int(get, "LEARNER_REPLAY_HOURS", 0, 87_600),
            api_host=get("API_HOST"),
            api_port=_int(get, "API_PORT", 1, 65535),
            api_deadline_ms=_int(get, "API_DEADLINE_MS", 1, 60_000),
            api_exposure_wait_ms=_int(get, "API_EXPOSURE_WAIT_MS", 0, 60_000),
            # Not stripped: secrets are used byte for byte.
            api_keys=env.get(ENV_PREFIX + "API_KEYS", ""),
            api_admin_token=env.get(ENV_PREFIX + "API_ADMIN_TOKEN", ""),
            api_read_token=env.get(ENV_PREFIX + "API_READ_TOKEN", ""),
            api_origins=get("API_ORIGINS"),
            api_max_body_bytes=_int(get, "API_MAX_BODY_BYTES", 1024, 64 * 1024 * 1024),
            api_rate=_int(get, "API_RATE", 0, 1_000_000),
            api_clock_tolerance_s=_int(get, "API_CLOCK_TOLERANCE_S", 0, 7 * 86_400),
            startup_timeout_s=_float(get, "STARTUP_TIMEOUT_S", 0, 3600),
            redis_outage_leave_s=_float(get, "REDIS_OUTAGE_LEAVE_S", 0, 86_400),
            redis_replica_wait_ms=_int(get, "REDIS_REPLICA_WAIT_MS", 0, 60_000),
            kafka_security_protocol=get("KAFKA_SECURITY_PROTOCOL").upper(),
            kafka_sasl_mechanism=get("KAFKA_SASL_MECHANISM").upper(),
            kafka_sasl_username=get("KAFKA_SASL_USERNAME"),
            # Not stripped: secrets are used byte for byte.
            kafka_sasl_password=env.get(ENV_PREFIX + "KAFKA_SASL_PASSWORD", ""),
            kafka_ssl_cafile=_path(get("KAFKA_SSL_CAFILE")),
            kafka_ssl_certfile=_path(get("KAFKA_SSL_CERTFILE")),
            kafka_ssl_keyfile=_path(get("KAFKA_SSL_KEYFILE")),
            kafka_ssl_key_password=env.get(ENV_PREFIX + "KAFKA_SSL_KEY_PASSWORD", ""),
            kafka_ssl_check_hostname=_bool(get, "KAFKA_SSL_CHECK_HOSTNAME"),
            redis_ssl_cafile=_path(get("REDIS_SSL_CAFILE")),
            redis_ssl_certfile=_path(get("REDIS_SSL_CERTFILE")),
            redis_ssl_keyfile=_path(get("REDIS_SSL_KEYFILE")),
            max_future_skew_s=_int(get, "MAX_FUTURE_SKEW_S", 0, 7 * 86_400),
            kpi_days=_int(get, "KPI_DAYS", 1, 3660),
            attribution_hours=_int(get, "ATTRIBUTION_HOURS", 1, 24 * 366),
            compact_after_days=_int(get, "COMPACT_AFTER_DAYS", 0, 3650),
            tombstone_hours=_int(get, "TOMBSTONE_HOURS", 0, 24 * 366),
            erasure_suppress_days=_int(get, "ERASURE_SUPPRESS_DAYS", 0, 3650),
            consent_defaults=get("CONSENT_DEFAULTS"),
            trust_levels=get("TRUST_LEVELS"),
            trust_conflict_days=_float(get, "TRUST_CONFLICT_DAYS", 0, 3650),
            recs_sensitive_categories=get("RECS_SENSITIVE_CATEGORIES"),
            recs_replenishable_categories=get("RECS_REPLENISHABLE_CATEGORIES"),
            sources=sources,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"STREAMPROC_LOG_LEVEL={self.log_level!r}: use debug, info, warn (or warning) "
                "or error"
            )
        if self.learner not in {"worker", "off"}:
            raise ConfigError(f"STREAMPROC_LEARNER={self.learner!r}: use worker or off "
                              "(true and false also work)")
        if self.partition_check not in {"deadletter", "warn", "off"}:
            raise ConfigError(f"STREAMPROC_PARTITION_CHECK={self.partition_check!r}: use "
                              "deadletter, warn or off")
        self.trust_level_map()  # a mistake there stops the start, with what to write
        if self.state_compression not in {"zstd", "zlib", "none"}:
            raise ConfigError(
                f"STREAMPROC_STATE_COMPRESSION={self.state_compression!r}: use zstd, zlib or none"
            )
        if urlsplit(self.redis_url).scheme not in {"redis", "rediss", "unix", "redis+cluster",
                                                    "rediss+cluster"}:
            raise ConfigError(
                f"STREAMPROC_REDIS_URL={masked_url(self.redis_url)!r}: expected "
                "redis://host:port/db (a Redis Cluster: redis+cluster://host:port[,host:port])"
            )
        if self.redis_is_cluster and urlsplit(self.redis_url).path.strip("/") not in {"", "0"}:
            raise ConfigError(
                f"STREAMPROC_REDIS_URL={masked_url(self.redis_url)!r}: a Redis Cluster has only "
                "database 0: drop the /db part")
        for server in self.kafka_bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(
                    f"STREAMPROC_KAFKA_BOOTSTRAP={self.kafka_bootstrap!r}: expected host:port[,...]"
                )
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"STREAMPROC_LOG_FORMAT={self.log_format!r}: use text or json")
        if self.min_insync_replicas > self.replication_factor:
            raise ConfigError(
                f"STREAMPROC_MIN_INSYNC_REPLICAS={self.min_insync_replicas} is more than "
                f"STREAMPROC_REPLICATION_FACTOR={self.replication_factor}: no write could "
                "succeed; with a replication factor of 3, use 2")
        self.validate_kafka_security()
        self.api_write_keys()  # raises on a malformed STREAMPROC_API_KEYS
        self.consent_granted_by_default()  # raises on a malformed STREAMPROC_CONSENT_DEFAULTS
        names = self.topics.all()
        if len(set(names)) != len(names):
            raise ConfigError(f"topic names must be distinct, got {names}")

    def validate_kafka_security(self) -> None:
        """The Kafka security settings agree with each other (the files are read later, by
        :func:`streamproc.kafka_options.kafka_options`).

        >>> Settings(kafka_security_protocol="SASL_SSL").validate_kafka_security()
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        streamproc.errors.ConfigError: ...=SASL_SSL needs STREAMPROC_KAFKA_SASL_USERNAME and ...
        """
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={protocol!r}: use "
                              + ", ".join(KAFKA_SECURITY_PROTOCOLS))
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(f"STREAMPROC_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: "
                              "use " + ", ".join(KAFKA_SASL_MECHANISMS))
        if protocol.startswith("SASL_") and not (self.kafka_sasl_username
                                                 and self.kafka_sasl_password):
            raise ConfigError(f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                              "STREAMPROC_KAFKA_SASL_USERNAME and STREAMPROC_KAFKA_SASL_PASSWORD")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ConfigError("STREAMPROC_KAFKA_SSL_CERTFILE and STREAMPROC_KAFKA_SSL_KEYFILE go "
                              "together (a client certificate and its private key)")
        redis_tls = {"STREAMPROC_REDIS_SSL_CAFILE": self.redis_ssl_cafile,
                     "STREAMPROC_REDIS_SSL_CERTFILE": self.redis_ssl_certfile,
                     "STREAMPROC_REDIS_SSL_KEYFILE": self.redis_ssl_keyfile}
        given = [name for name, path in redis_tls.items() if path is not None]
        if given and not urlsplit(self.redis_url).scheme.startswith("rediss"):
            raise ConfigError(f"{given[0]} is for Redis over TLS: STREAMPROC_REDIS_URL="
                              f"{masked_url(self.redis_url)!r} should be rediss://host:port/db")
        if (self.redis_ssl_certfile is None) != (self.redis_ssl_keyfile is None):
            raise ConfigError("STREAMPROC_REDIS_SSL_CERTFILE and STREAMPROC_REDIS_SSL_KEYFILE go "
                              "together (a client certificate and its private key)")

    def api_write_keys(self) -> dict[str, str]:
        """``STREAMPROC_API_KEYS`` as {key: site}; the keys themselves never appear in errors.

        >>> Settings(api_keys="shop=k1-shop-key, app=k2-app-key").api_write_keys()
        {'k1-shop-key': 'shop', 'k2-app-key': 'app'}
        """
        found: dict[str, str] = {}
        for n, pair in enumerate(filter(None, (p.strip() for p in self.api_keys.split(","))), 1):
            site, sep, key = pair.partition("=")
            site, key = site.strip(), key.strip()
            if not sep or not site or len(key) < 8:
                raise ConfigError(f"STREAMPROC_API_KEYS: entry {n} is not site=key with a key of "
                                  "8 characters or more (entries are separated by commas)")
            if key in found:
                raise ConfigError(f"STREAMPROC_API_KEYS: entry {n} ({site}) repeats the key of "
                                  f"{found[key]}")
            found[key] = site
        return found

    def consent_granted_by_default(self) -> frozenset[str]:
        """The purposes ``STREAMPROC_CONSENT_DEFAULTS`` takes as granted until withdrawn;
        every other purpose needs the customer's grant.

        >>> sorted(Settings(consent_defaults="personalisation=granted").consent_granted_by_default())
        ['personalisation']
        >>> Settings().consent_granted_by_default()
        frozenset()
        >>> Settings(consent_defaults="personalization=granted").consent_granted_by_default()
        Traceback (most recent call last):
        streamproc.errors.ConfigError: STREAMPROC_CONSENT_DEFAULTS: unknown purpose 'personalization' (did you mean personalisation?): the purposes are personalisation, email, sms, push, call_centre
        """  # noqa: E501
        granted: dict[str, bool] = {}
        for pair in filter(None, (p.strip() for p in self.consent_defaults.split(","))):
            purpose, sep, answer = (part.strip().lower() for part in pair.partition("="))
            if purpose not in CONSENT_PURPOSES:
                near = difflib.get_close_matches(purpose, CONSENT_PURPOSES, n=1, cutoff=0.7)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise ConfigError(f"STREAMPROC_CONSENT_DEFAULTS: unknown purpose {purpose!r}"
                                  f"{hint}: the purposes are {', '.join(CONSENT_PURPOSES)}")
            if not sep or answer not in {"granted", "denied"}:
                raise ConfigError(f"STREAMPROC_CONSENT_DEFAULTS: {pair!r} is not "
                                  f"{purpose}=granted or {purpose}=denied")
            if purpose in granted:
                raise ConfigError(f"STREAMPROC_CONSENT_DEFAULTS: {purpose} is given twice")
            granted[purpose] = answer == "granted"
        return frozenset(purpose for purpose, yes in granted.items() if yes)
    def trust_level_map(self) -> dict[str, int]:
        """``STREAMPROC_TRUST_LEVELS`` as a map of source to level.

        >>> Settings().trust_level_map()
        {'declared': 3, 'observed': 3, 'crm': 2, 'inferred': 1}
        >>> Settings(trust_levels="declared=3,crm=2").trust_level_map()
        Traceback (most recent call last):
        streamproc.errors.ConfigError: STREAMPROC_TRUST_LEVELS: no level for inferred, observed; give every source: declared, crm, inferred, observed
        """  # noqa: E501
        levels: dict[str, int] = {}
        for pair in filter(None, (part.strip() for part in self.trust_levels.split(","))):
            name, sep, number = (piece.strip().lower() for piece in pair.partition("="))
            if name not in TRUST_SOURCES:
                raise ConfigError(f"STREAMPROC_TRUST_LEVELS: unknown source {name!r}: the "
                                  f"sources are {', '.join(TRUST_SOURCES)}")
            if not sep or not number.isdigit() or int(number) > 100:
                raise ConfigError(f"STREAMPROC_TRUST_LEVELS: {pair!r} is not "
                                  f"{name}=<level, 0 to 100>")
            if name in levels:
                raise ConfigError(f"STREAMPROC_TRUST_LEVELS: {name} is given twice")
            levels[name] = int(number)
        missing = [s for s in TRUST_SOURCES if s not in levels]
        if missing:
            raise ConfigError(f"STREAMPROC_TRUST_LEVELS: no level for {', '.join(missing)}; "
                              f"give every source: {', '.join(TRUST_SOURCES)}")
        return levels

    def categories(self, which: str) -> frozenset[str]:
        """``STREAMPROC_RECS_<WHICH>_CATEGORIES`` as a set.

        >>> sorted(Settings(recs_sensitive_categories=" health, adult,").categories("sensitive"))
        ['adult', 'health']
        """
        listed: str = getattr(self, f"recs_{which}_categories")
        return frozenset(c.strip() for c in listed.split(",") if c.strip())

    def api_origin_list(self) -> tuple[str, ...]:
        """``STREAMPROC_API_ORIGINS`` as a tuple, without trailing slashes.

        >>> Settings(api_origins="https://a.example/, http://localhost:3000").api_origin_list()
        ('https://a.example', 'http://localhost:3000')
        """
        return tuple(o.strip().rstrip("/") for o in self.api_origins.split(",") if o.strip())

    @property
    def model_secret_hint(self) -> str:
        """What to do when there is no model secret (for messages that say it is missing)."""
        return (f"set STREAMPROC_MODEL_SECRET (a long random value, the same everywhere), or "
                f"run `streamproc stack up`, which makes one in "
                f"{self.stack_dir / MODEL_SECRET_FILE} for the local commands")

    @property
    def kafka_url(self) -> str:
        """The broker list in Faust's ``kafka://`` form."""
        return ";".join(f"kafka://{s.strip()}" for s in self.kafka_bootstrap.split(","))

    @property
    def redis_is_cluster(self) -> bool:
        """A Redis Cluster: STREAMPROC_REDIS_CLUSTER=true or a ``redis+cluster://`` URL."""
        return self.redis_cluster or urlsplit(self.redis_url).scheme.endswith("+cluster")

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        host, _, port = self.kafka_bootstrap.split(",")[0].strip().rpartition(":")
        return host, int(port)


def shown_values(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, value in force, source) of every setting, secrets masked, for people.

    >>> rows = shown_values(Settings.from_env({"STREAMPROC_MODEL_SECRET": "s3cret"}))
    >>> for row in rows:
    ...     if row[0].endswith(("MODEL_SECRET", "_PARTITIONS")):
    ...         print(row)
    ('STREAMPROC_PARTITIONS', '12', 'default')
    ('STREAMPROC_MODEL_SECRET', '(set, 6 characters)', 'environment')
    """
    rows = []
    for name, _, _ in SETTING_DOCS:
        rows.append((ENV_PREFIX + name, _shown(settings, name),
                     settings.sources.get(name, FROM_DEFAULT)))
    return rows


def _shown(settings: Settings, name: str) -> str:
    if name in SECRETS:
        secret = getattr(settings, name.lower())
        return f"(set, {len(secret)} characters)" if secret else "(not set)"
    if name == "TOPIC_PREFIX":
        return _common_prefix(settings.topics)
    if name.startswith("TOPIC_"):
        return str(getattr(settings.topics, name.removeprefix("TOPIC_").lower()))
    value = getattr(settings, name.lower())
    if name == "REDIS_URL":
        return masked_url(value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _common_prefix(topics: Topics) -> str:
    """The prefix the topic names were made with (the names of those not overridden)."""
    made = [getattr(topics, f.name).removesuffix(f.name) for f in fields(Topics)
            if getattr(topics, f.name).endswith(f.name)]
    return max(set(made), key=made.count) if made else ""


def read_secret_files(env: Mapping[str, str]) -> dict[str, tuple[str, Path]]:
    """{name: (value, path)} of the secrets given as files (``STREAMPROC_<NAME>_FILE``).

    The file holds the value as it is, but for one line end at its end (``echo`` and editors
    add one). Giving both the file and the variable itself is an error: which one wins would
    be a guess. Errors name the variable and the file, never the value.

    >>> read_secret_files({"STREAMPROC_PARTITIONS": "4"})
    {}
    """
    found: dict[str, tuple[str, Path]] = {}
    for name in SECRET_FILES:
        file_var = f"{ENV_PREFIX}{name}{FILE_SUFFIX}"
        given = env.get(file_var, "").strip()
        if not given:
            continue
        if env.get(ENV_PREFIX + name, ""):
            raise ConfigError(f"both {ENV_PREFIX}{name} and {file_var} are set: keep one (the "
                              "file keeps the secret out of the environment)")
        path = Path(given).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
                type(exc).__name__
            raise ConfigError(f"{file_var}={str(path)!r}: cannot read the file ({reason}); "
                              "give a readable UTF-8 file holding the value") from None
        value = text.removesuffix("\n").removesuffix("\r")
        if not value:
            raise ConfigError(f"{file_var}={str(path)!r}: the file is empty")
        found[name] = (value, path)
    return found


def read_model_secret(path: Path) -> str:
    """The secret in the local stack's file (without its line end); "" when there is none.

    >>> read_model_secret(Path("/nonexistent/model-secret"))
    ''
    """
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the model secret in {path} ({exc}): fix or delete the "
                          "file (`streamproc stack up` makes a new one), or set "
                          "STREAMPROC_MODEL_SECRET") from None


_N = TypeVar("_N", int, float)


def _number(get: Callable[[str], str], name: str, parse: Callable[[str], _N], what: str,
            low: _N, high: _N) -> _N:
    raw = get(name)
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r}: expected {what}") from None
    if not low <= value <= high:
        raise ConfigError(f"{ENV_PREFIX}{name}={value}: expected {low} to {high}")
    return value


def _path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _bool(get: Callable[[str], str], name: str) -> bool:
    raw = get(name).lower()
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r}: expected true or false")
    return raw in _TRUE


def _int(get: Callable[[str], str], name: str, low: int, high: int) -> int:
    return _number(get, name, int, "a whole number", low, high)


def _float(get: Callable[[str], str], name: str, low: float, high: float) -> float:
    return _number(get, name, float, "a number", low, high)
