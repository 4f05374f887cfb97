"""Persistent storage of market data in ClickHouse (embedded through chdb, or a server later).

* ``EmbeddedStore`` -- the in-process store (``store``); ``Store`` -- the protocol both stores meet.
* ``StorageWriter`` -- batches records for a store by count and by time (``writer``).
* ``apply_migrations`` -- the schema in ``migrations/clickhouse`` (``migrations``).
* ``codec`` -- engine records <-> Arrow batches; ``bench`` -- write throughput.
* ``dead_letters`` -- the stored form of the feeds' dead letters and the runtime's recorder of them.
"""

from __future__ import annotations

from server.storage._chdb import StorageError
from server.storage.codec import ALL_KINDS, Kind, StoredRecord
from server.storage.migrations import MigrationError, apply_migrations
from server.storage.protocol import Store
from server.storage.store import EmbeddedStore
from server.storage.writer import StorageWriter

__all__ = [
    "ALL_KINDS",
    "EmbeddedStore",
    "Kind",
    "MigrationError",
    "StorageError",
    "StorageWriter",
    "Store",
    "StoredRecord",
    "apply_migrations",
]
