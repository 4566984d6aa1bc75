"""Synthetic traffic for streamproc: a persona-driven population, its sessions, and a producer.

``population`` (who the customers are, with hidden personas as ground truth), ``sessions`` (a
pure event-time generator) and ``producer`` (paces the events onto Kafka) are separate so the
behaviour model can be tested and replayed without a broker.
"""

from __future__ import annotations

from streamproc.simulator.population import (
    CATEGORIES,
    PERSONAS,
    Customer,
    Persona,
    Population,
    Product,
    ProductCatalogue,
)
from streamproc.simulator.producer import (
    KafkaUnavailableError,
    SimulationError,
    SimulationStats,
    run_simulation,
)
from streamproc.simulator.sessions import SimEvent, format_ts, generate_events

__all__ = [
    "CATEGORIES",
    "PERSONAS",
    "Customer",
    "KafkaUnavailableError",
    "Persona",
    "Population",
    "Product",
    "ProductCatalogue",
    "SimEvent",
    "SimulationError",
    "SimulationStats",
    "format_ts",
    "generate_events",
    "run_simulation",
]
