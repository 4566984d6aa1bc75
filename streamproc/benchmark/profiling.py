"""Where the time goes: a cProfile run summed by what the code is for, and its top functions.

Used by ``streamproc bench --profile`` (a worker run under cProfile) and by
``bench/state_bench.py --profile`` (the processor in-process).
"""

from __future__ import annotations

import os
import pstats
from typing import Any

# cProfile's own time per function, summed per group; the first group whose needle is in
# "filename:function" wins. Builtins and standard-library functions (dict.get, isinstance,
# datetime, re, ...) are charged to the code that called them, so "segments" includes the
# builtins segments code calls.
PROFILE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting (event loop idle in epoll: Kafka, Redis)", ("'poll' of 'select.epoll'",)),
    ("JSON (orjson loads/dumps)", ("orjson",)),
    ("document compression (zstd or zlib, state/document.py, zdict.py)",
     ("zlib", "zstd", "streamproc/state/document.py", "streamproc/state/zdict.py")),
    # Socket writes serve both clients: in a worker they are mostly Kafka produce requests.
    ("socket writes and reads (Kafka and Redis)", ("_socket.socket",)),
    ("redis-py client (commands, pipeline)", ("/redis/", "hiredis")),
    ("aiokafka client (fetch, records, produce)", ("/aiokafka/",)),
    ("Faust and mode (streams, acks, consumer)", ("/faust/", "/mode/")),
    ("asyncio machinery", ("/asyncio/",)),
    ("schema validation (fastjsonschema)", ("<string>", "fastjsonschema")),
    ("decode (codec: envelope, timestamps)", ("streamproc/events/",)),
    ("profile update (state/profile.py)", ("streamproc/state/profile.py",)),
    ("segments (segments/)", ("streamproc/segments/",)),
    ("intent model (learning/scorer.py, models/, River)",
     ("streamproc/learning/scorer.py", "streamproc/models/", "/river/")),
    ("policy (decisions/)", ("streamproc/decisions/",)),
    ("processor (dedupe, outbox, records)", ("streamproc/processor.py",)),
    ("store and keys (state/store.py, keys.py)", ("streamproc/state/store.py",
                                                  "streamproc/state/keys.py")),
    ("batch loop and emitter (worker/agents.py, worker/app.py)",
     ("streamproc/worker/agents.py", "streamproc/worker/app.py")),
    ("the benchmark loop itself", ("/bench/state_bench.py", "/bench/models_bench.py")),
)
OTHER = "other"
BUILTINS = "other (builtins, standard library)"
STDLIB = os.path.dirname(os.__file__)


def _own_group(key: tuple[str, int, str]) -> str | None:
    """The group of a function, or None for builtins and the standard library."""
    filename, _, func = key
    where = f"{filename}:{func}"
    for name, needles in PROFILE_GROUPS:
        if any(n in where for n in needles):
            return name
    if filename == "~" or (filename.startswith(STDLIB) and "site-packages" not in filename):
        return None
    return OTHER


def _short(filename: str) -> str:
    return filename.split("site-packages/")[-1].split(os.getcwd() + "/")[-1]


def summarise_profile(stats: pstats.Stats, top: int = 15) -> dict[str, Any]:
    """Own time per group (``groups``), and the ``top`` functions by own and cumulative time."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    groups: dict[str, float] = {}

    def charge(group: str | None, seconds: float) -> None:
        group = group or BUILTINS
        groups[group] = groups.get(group, 0.0) + seconds

    functions = []
    for key, (_, calls, tt, ct, callers) in raw.items():
        group = _own_group(key)
        if group is None and callers:
            for caller, caller_stats in callers.items():
                charge(_own_group(caller), caller_stats[2])
        else:
            charge(group, tt)
        filename, line, func = key
        functions.append({"function": f"{_short(filename)}:{line}({func})", "calls": calls,
                          "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)})
    by_own = sorted(functions, key=lambda f: -f["tottime_s"])
    by_cumulative = sorted(functions, key=lambda f: -f["cumtime_s"])
    return {
        "total_s": round(total, 3),
        "groups": {g: {"seconds": round(s, 3), "share": round(s / total, 3) if total else 0.0}
                   for g, s in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_functions": by_own[:top],
        "top_cumulative": by_cumulative[:top],
    }
