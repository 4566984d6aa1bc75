"""Keep the latest decision per customer and slot, as a website backend would: an example.

Follows the decisions topic with aiokafka (from the beginning, or from the group's committed
offsets), keeps the newest unexpired decision per (customer, slot) in memory and forgets a
customer on a tombstone (a null value: the customer was erased). Each change is printed as one
JSON line, so you can watch it work:

    python examples/website_consumer.py --bootstrap 127.0.0.1:9092 \\
        --topic streamproc.decisions

    {"event": "decision", "customer_id": "cust-42", "slot": "homepage_hero", "action": ...}
    {"event": "erased", "customer_id": "cust-42", "slots": 1}

Standalone on purpose (aiokafka and the standard library only): copy it into your website's
backend and call :meth:`Latest.get` where the slot is rendered. See examples/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Latest:
    """The newest decision per customer and slot.

    >>> latest = Latest()
    >>> d = {"customer_id": "c1", "slot": "hero", "ts": "2030-01-01T10:00:00Z",
    ...      "expires_at": "2030-01-01T11:00:00Z", "action": {"id": "a", "kind": "offer"}}
    >>> latest.apply(b"c1", json.dumps(d).encode())["event"]
    'decision'
    >>> latest.get("c1", "hero", now_ms=_ms("2030-01-01T10:30:00Z"))["action"]["id"]
    'a'
    >>> latest.apply(b"c1", None), latest.get("c1", "hero", now_ms=0)
    ({'event': 'erased', 'customer_id': 'c1', 'slots': 1}, None)
    """

    by_customer: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        """Take one record of the decisions topic; return the change it made, if any."""
        if key is None:
            return None
        customer = key.decode()
        if value is None:  # a tombstone: the customer was erased, forget everything
            slots = self.by_customer.pop(customer, {})
            return {"event": "erased", "customer_id": customer, "slots": len(slots)}
        decision = json.loads(value)
        slot = decision.get("slot")
        if not slot:
            return None
        slots = self.by_customer.setdefault(customer, {})
        current = slots.get(slot)
        # Newest by event time: a decision republished after a worker restart, or one for an
        # older event read late, does not replace a newer one.
        if current is not None and _ms(current["ts"]) > _ms(decision["ts"]):
            return None
        slots[slot] = decision
        return {"event": "decision", "customer_id": customer, "slot": slot,
                "decision_id": decision.get("decision_id"),
                "action": decision["action"], "personalised": decision.get("personalised"),
                "expires_at": decision.get("expires_at")}

    def get(self, customer_id: str, slot: str, now_ms: int | None = None
            ) -> dict[str, Any] | None:
        """The decision to render, or None (then show your own default)."""
        decision = self.by_customer.get(customer_id, {}).get(slot)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if decision is None or (decision.get("expires_at") and _ms(decision["expires_at"]) <= now):
            return None
        return decision


async def follow(bootstrap: str, topic: str, latest: Latest, stop: asyncio.Event,
                 group: str | None = None) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=group is not None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    print(json.dumps({"event": "started", "topic": topic}), flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    change = latest.apply(record.key, record.value)
                    if change is not None:
                        print(json.dumps(change), flush=True)
    finally:
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Keep the latest streamproc decision per customer and slot; print changes "
                    "as JSON lines (Ctrl-C stops).")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092",
                        help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--topic", default="streamproc.decisions",
                        help="the decisions topic (default: %(default)s)")
    parser.add_argument("--group", default=None,
                        help="consumer group to commit offsets in; default: none, read the "
                             "whole topic at every start")
    args = parser.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await follow(args.bootstrap, args.topic, Latest(), stop, args.group)

    try:
        asyncio.run(run())
    except (OSError, KafkaConnectionError) as exc:
        print(f"website_consumer: cannot reach Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
