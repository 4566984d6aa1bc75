"""Stored documents and outboxes: every format stays readable whatever the setting says."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import orjson
import pytest
import zstandard

from bench import profile_dictionary
from streamproc.processor import Processor, upgrade_outbox
from streamproc.state import zdict
from streamproc.state.document import (
    COMPRESSIONS,
    ZSTD_MAGIC,
    pack_doc,
    pack_outbox,
    unpack_doc,
    unpack_outbox,
)
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import apply_event, new_profile, upgrade_profile
from streamproc.state.store import Stored

from .helpers import SETTINGS

DAY = 86_400_000


def typical_profile() -> dict:
    p = new_profile("cust-42")
    for i in range(20):
        apply_event(p, "product_view", 1_780_000_000_000 + i * 60_000, {
            "type": "product_view", "product": {"product_id": f"shoes-{i % 7}",
                                                "category": "shoes", "brand": "Stride",
                                                "price": 89.95}})
    apply_event(p, "purchase", 1_780_000_000_000 + DAY, {
        "type": "purchase", "order_id": "o-1", "amount": 89.95, "currency": "EUR",
        "lines": [{"product_id": "shoes-1", "category": "shoes", "quantity": 1,
                   "unit_price": 89.95}]})
    return p


@pytest.mark.parametrize("written", COMPRESSIONS)
def test_every_format_reads_back_whatever_the_setting(written):
    p = typical_profile()
    outbox = [{"topic": "segments", "record": {"customer_id": "cust-42", "to": "new"}}]
    assert unpack_doc(pack_doc(p, written)) == p
    assert unpack_outbox(pack_outbox(outbox, written)) == outbox
    assert pack_outbox([], written) == b"[]" and unpack_outbox(b"[]") == []


def test_zstd_uses_the_shipped_dictionary_and_beats_zlib():
    p = typical_profile()
    blob = pack_doc(p, "zstd")
    assert blob[:4] == ZSTD_MAGIC
    assert zstandard.get_frame_parameters(blob).dict_id == zdict.CURRENT
    assert len(blob) < 0.7 * len(pack_doc(p, "zlib")), (len(blob), len(pack_doc(p, "zlib")))


def test_the_shipped_dictionaries_are_intact():
    for dict_id in zdict.DICTIONARIES:
        assert zdict.dictionary(dict_id).dict_id() == dict_id
    assert zdict.CURRENT in zdict.DICTIONARIES


def test_a_frame_without_a_dictionary_is_read():
    raw = orjson.dumps(typical_profile())
    assert unpack_doc(zstandard.ZstdCompressor().compress(raw)) == orjson.loads(raw)


def test_a_document_from_an_unknown_dictionary_is_refused_with_the_reason():
    unknown = zstandard.train_dictionary(
        1024, [orjson.dumps({"n": i, "k": "v" * (i % 13)}) for i in range(400)],
        dict_id=zdict.ID_BASE + 999)
    blob = zstandard.ZstdCompressor(dict_data=unknown).compress(b'{"a": 1}')
    with pytest.raises(ValueError, match="does not have"):
        unpack_doc(blob)


def test_zlib_documents_of_earlier_versions_stay_readable():
    p = typical_profile()
    assert unpack_doc(zlib.compress(orjson.dumps(p))) == p  # any zlib level


def test_the_dictionary_trainer_runs_on_simulated_traffic(tmp_path, capsys):
    """`python -m bench.profile_dictionary` drives a worker's processor over simulated events: it
    broke once when the processor's parts changed, and nothing ran it."""
    out = tmp_path / "new.zdict"
    assert profile_dictionary.main(["--out", str(out), "--dict-id", "99", "--customers", "300",
                       "--events", "3000", "--every", "2"]) == 0
    trained = zstandard.ZstdCompressionDict(out.read_bytes())
    assert trained.dict_id() == zdict.ID_BASE + 99
    assert "dictionary" in capsys.readouterr().err
    doc = orjson.dumps(typical_profile())
    with_it = zstandard.ZstdCompressor(dict_data=trained).compress(doc)
    assert len(with_it) < 0.7 * len(zstandard.ZstdCompressor().compress(doc))
    with pytest.raises(SystemExit, match="exists"):  # a shipped dictionary never changes
        profile_dictionary.main(["--out", str(out), "--dict-id", "99"])


def test_what_the_previous_version_stored_still_loads():
    """A document and an outbox as streamproc stored them before profiles-2 and level 1 (taken
    from a simulated worker's write): read back by this version, and the processor's loading
    gives the same profile and outbox."""
    stored = orjson.loads((Path(__file__).parent / "data" / "stored-5878326.json").read_bytes())
    doc, outbox = base64.b64decode(stored["doc"]), base64.b64decode(stored["outbox"])
    assert zstandard.get_frame_parameters(doc).dict_id == zdict.ID_BASE + 1 != zdict.CURRENT
    assert zstandard.get_frame_parameters(outbox).dict_id == zdict.ID_BASE + 1
    assert unpack_doc(doc) == stored["doc_json"]
    assert unpack_outbox(outbox) == stored["outbox_json"]
    # The processor reads it as it reads its own writes, and writes it anew with the current
    # dictionary, no bigger than before.
    processor = Processor(SETTINGS, MemoryStore())
    profile, outputs, _ = processor._load("c", Stored(3, doc, outbox))
    assert profile == upgrade_profile(stored["doc_json"])
    assert outputs == upgrade_outbox(stored["outbox_json"])
    rewritten = pack_doc(profile, "zstd"), pack_outbox(outputs, "zstd")
    assert [zstandard.get_frame_parameters(b).dict_id for b in rewritten] == [zdict.CURRENT] * 2
    assert unpack_doc(rewritten[0]) == profile and unpack_outbox(rewritten[1]) == outputs
    assert len(rewritten[0]) + len(rewritten[1]) <= len(doc) + len(outbox)
