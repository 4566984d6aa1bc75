"""Signed model snapshots: what is not signed with the secret is never unpickled."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import pytest

from streamproc.errors import StreamprocError
from streamproc.models import IntentModel
from streamproc.models.snapshot import MAGIC, SnapshotError, dump, load, verify

SECRET = b"a-long-random-secret-shared-by-the-workers"
EXECUTED: list[str] = []


def _boom(tag: str) -> str:
    EXECUTED.append(tag)
    return tag


class Evil:
    """Unpickling this runs ``_boom``: stands for os.system and friends."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _boom, ("pwned",)


@pytest.fixture(autouse=True)
def _clean() -> None:
    EXECUTED.clear()


def test_round_trip_keeps_version_and_model() -> None:
    model = IntentModel()
    for i in range(200):
        model.observe({"a": float(i % 7), "b": 1.0}, i % 7 > 3)
    blob = dump(model, SECRET, version=12, created_ms=1_700_000_000_000)
    version, loaded = load(blob, SECRET)
    assert version == 12
    x = {"a": 5.0, "b": 1.0}
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    assert loaded.stats() == model.stats()
    header, _ = verify(blob, SECRET)
    assert header.version == 12 and header.created_ms == 1_700_000_000_000
    assert blob.startswith(MAGIC)


def test_a_wrong_secret_is_refused_with_a_clear_message() -> None:
    blob = dump({"w": 1}, SECRET, version=1)
    with pytest.raises(SnapshotError) as info:
        load(blob, b"another-secret")
    assert str(info.value) == (
        "snapshot signature does not match: wrong STREAMPROC_MODEL_SECRET or tampered data; "
        "refusing to load it"
    )
    assert isinstance(info.value, StreamprocError)


def test_a_tampered_payload_with_a_malicious_reduce_is_never_executed() -> None:
    blob = dump({"harmless": True}, SECRET, version=3)
    header_and_tag = blob[: len(blob) - len(pickle.dumps({"harmless": True}, protocol=5))]
    evil = pickle.dumps(Evil(), protocol=5)
    # Same header (with the evil payload's length patched in) and the old, now wrong, tag.
    size_at = 4 + 2 + 8 + 8
    patched = (header_and_tag[:size_at] + struct.pack(">Q", len(evil))
               + header_and_tag[size_at + 8:] + evil)
    with pytest.raises(SnapshotError, match="signature does not match"):
        load(patched, SECRET)
    # Signed with another secret: just as refused.
    with pytest.raises(SnapshotError, match="signature does not match"):
        load(dump(Evil(), b"attacker-secret", version=3), SECRET)
    assert EXECUTED == []
    # The control: the same bytes signed with the right secret do run on load.
    load(dump(Evil(), SECRET, version=3), SECRET)
    assert EXECUTED == ["pwned"]


@pytest.mark.parametrize("cut", [0, 5, 30, 61, -1])
def test_truncated_snapshots_are_refused(cut: int) -> None:
    blob = dump(list(range(100)), SECRET, version=1)
    with pytest.raises(SnapshotError, match="snapshot"):
        load(blob[:cut], SECRET)


def test_padding_wrong_magic_and_format_are_refused() -> None:
    blob = dump([1, 2], SECRET, version=1)
    with pytest.raises(SnapshotError, match="truncated or padded"):
        load(blob + b"\0", SECRET)
    with pytest.raises(SnapshotError, match="not a model snapshot"):
        load(b"XXXX" + blob[4:], SECRET)
    with pytest.raises(SnapshotError, match="format 9 is not supported"):
        load(blob[:4] + struct.pack(">H", 9) + blob[6:], SECRET)


def test_flipping_any_header_byte_breaks_the_signature() -> None:
    blob = dump([1, 2], SECRET, version=1)
    for i in range(6, 22):  # version and created time
        tampered = blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:]
        with pytest.raises(SnapshotError, match="signature does not match"):
            load(tampered, SECRET)


def test_an_empty_secret_is_refused_for_dump_and_load() -> None:
    blob = dump([1], SECRET, version=1)
    with pytest.raises(SnapshotError, match="STREAMPROC_MODEL_SECRET"):
        dump([1], b"", version=1)
    with pytest.raises(SnapshotError, match="STREAMPROC_MODEL_SECRET"):
        load(blob, b"")


def test_version_must_fit() -> None:
    with pytest.raises(SnapshotError, match="version"):
        dump([1], SECRET, version=-1)
