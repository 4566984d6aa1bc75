"""The Kafka broker's jars: fetched once with Maven, checked against a committed lock, cached.

Why Maven and a lock file: Apache Kafka's broker is the Maven artifact ``kafka_2.13`` plus its
transitive dependencies, so Maven (with its default repository and ``-C``, strict checksums)
assembles exactly the runtime classpath; Kafka's logging backend is compile-only there, so the
log4j 2 jars are added explicitly. The sha256 of every jar is pinned in
``kafka-<version>.lock`` next to this file, so that a changed or tampered artifact (or a mirror
serving something else) is refused instead of run. Verified jars are cached under
``<cache_dir>/kafka-<version>/libs`` and reused by every stack; the ``verified`` marker beside
them is written only after verification succeeded and names the lock it was checked against.

Regenerate the lock (after changing a version below, review the diff before committing)::

    python -m streamproc.stack --write-lock
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from streamproc.errors import StackError
from streamproc.stack.process import exclusive, run

KAFKA_VERSION = "4.1.2"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
# Pinned so that every Maven version runs the same goal (Maven's super POM pins it differently).
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
LOCK_FILE = Path(__file__).with_name(f"kafka-{KAFKA_VERSION}.lock")
MAVEN_TIMEOUT_S = 900.0
REGENERATE = "python -m streamproc.stack --write-lock"


def render_pom() -> str:
    """A ``pom`` packaging project whose runtime dependencies are the broker's classpath."""
    deps = [("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION)] + [
        ("org.apache.logging.log4j", name, LOG4J_VERSION)
        for name in ("log4j-api", "log4j-core", "log4j-slf4j-impl")
    ]
    lines = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        "<project>\n"
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>io.streamproc</groupId><artifactId>kafka-broker</artifactId>"
        f"<version>{KAFKA_VERSION}</version><packaging>pom</packaging>\n"
        f"  <dependencies>\n{lines}\n  </dependencies>\n"
        "</project>\n"
    )


def parse_lock(text: str) -> dict[str, str]:
    """``{file name: sha256}`` from lock text: ``<sha256>  <file name>`` lines, ``#`` comments."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.strip()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name \
                or "/" in name or name in entries:
            raise StackError(f"{LOCK_FILE.name} line {number} is malformed: {raw!r}; "
                             f"regenerate it with `{REGENERATE}`")
        entries[name] = digest
    if not entries:
        raise StackError(f"{LOCK_FILE.name} lists no jars; regenerate it with `{REGENERATE}`")
    return entries


def format_lock(hashes: Mapping[str, str]) -> str:
    """Lock text for ``{file name: sha256}``, sorted, with a header saying how to regenerate."""
    header = (
        f"# Kafka {KAFKA_VERSION} broker runtime (kafka_{SCALA_VERSION} + log4j {LOG4J_VERSION}):"
        " sha256 and file name of every jar.\n"
        "# Checked by streamproc.stack.jars after each download.\n"
        f"# Regenerate: {REGENERATE}\n"
    )
    return header + "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_dir(libs: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every regular file in ``libs``."""
    return {p.name: sha256_file(p) for p in sorted(libs.iterdir()) if p.is_file()}


def verify_jars(libs: Path, lock: Mapping[str, str]) -> None:
    """Raise a StackError unless ``libs`` holds exactly the locked files with the locked hashes."""
    actual = hash_dir(libs)
    missing = sorted(set(lock) - set(actual))
    extra = sorted(set(actual) - set(lock))
    changed = sorted(n for n in set(lock) & set(actual) if actual[n] != lock[n])
    if not (missing or extra or changed):
        return
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("sha256 mismatch", changed), ("missing", missing), ("unexpected", extra))
                if names]
    raise StackError(
        f"the Kafka jars in {libs} do not match {LOCK_FILE.name} ({'; '.join(problems)}); "
        "nothing was cached. Check your Maven mirror settings (~/.m2/settings.xml) and retry; "
        f"only if you changed the Kafka version on purpose, regenerate the lock with "
        f"`{REGENERATE}` and review the diff."
    )


def lock_digest(lock: Mapping[str, str]) -> str:
    """A digest of the lock's entries: the cache marker stores it, so a new lock refetches."""
    entries = "".join(f"{lock[name]}  {name}\n" for name in sorted(lock))
    return hashlib.sha256(entries.encode()).hexdigest()


def cache_dir(base: Path) -> Path:
    return base.expanduser() / f"kafka-{KAFKA_VERSION}"


def cached_libs(base: Path, lock: Mapping[str, str]) -> Path | None:
    """The cached, verified libs directory if it is complete for ``lock``, else None."""
    root = cache_dir(base)
    libs, marker = root / "libs", root / "verified"
    try:
        if marker.read_text().strip() != lock_digest(lock):
            return None
        present = {p.name for p in libs.iterdir() if p.is_file()}
    except OSError:
        return None
    return libs if present == set(lock) else None


def maven_download(workdir: Path, out: TextIO) -> Path:
    """Run Maven in ``workdir`` to copy the broker's runtime jars into ``workdir/libs``."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch the Kafka jars: install it with "
            "`sudo apt-get install maven` (macOS: `brew install maven`), then retry"
        )
    (workdir / "pom.xml").write_text(render_pom())
    libs = workdir / "libs"
    print(f"kafka: fetching the Kafka {KAFKA_VERSION} jars with Maven (once, about 43 MB) ...",
          file=out, flush=True)
    started = time.monotonic()
    run([mvn, "-B", "-q", "-C", "-f", str(workdir / "pom.xml"),
         f"{DEPENDENCY_PLUGIN}:copy-dependencies", f"-DoutputDirectory={libs}",
         "-DincludeScope=runtime"],
        timeout=MAVEN_TIMEOUT_S, what="Maven (fetching the Kafka jars)", cwd=workdir)
    print(f"kafka: fetched in {time.monotonic() - started:.1f} s", file=out, flush=True)
    return libs


def ensure_jars(base: Path, out: TextIO) -> Path:
    """The verified libs directory under ``base`` (the cache dir), fetching it if needed."""
    lock = parse_lock(LOCK_FILE.read_text())
    libs = cached_libs(base, lock)
    if libs is not None:
        return libs
    root = cache_dir(base)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / ".download.lock", MAVEN_TIMEOUT_S + 60, "downloading the Kafka jars"):
        libs = cached_libs(base, lock)
        if libs is not None:  # another process fetched them while we waited
            return libs
        work = Path(tempfile.mkdtemp(prefix="download-", dir=root))
        try:
            fetched = maven_download(work, out)
            verify_jars(fetched, lock)
            marker, libs = root / "verified", root / "libs"
            marker.unlink(missing_ok=True)
            if libs.exists():
                shutil.rmtree(libs)
            fetched.rename(libs)
            marker.write_text(lock_digest(lock) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"kafka: {len(lock)} jars verified against {LOCK_FILE.name}, cached in {libs}",
          file=out, flush=True)
    return libs


def write_lock(out: TextIO) -> Path:
    """Fetch the jars into a temporary directory and (re)write the lock file from their hashes."""
    with tempfile.TemporaryDirectory(prefix="streamproc-kafka-lock-") as tmp:
        hashes = hash_dir(maven_download(Path(tmp), out))
    if not hashes:
        raise StackError("Maven copied no jars; nothing written")
    LOCK_FILE.write_text(format_lock(hashes))
    print(f"wrote {LOCK_FILE} ({len(hashes)} jars); review `git diff` before committing", file=out)
    return LOCK_FILE


__all__ = [
    "KAFKA_VERSION", "LOCK_FILE", "ensure_jars", "format_lock", "parse_lock", "render_pom",
    "verify_jars", "write_lock",
]
