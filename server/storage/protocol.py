"""The ``Store`` protocol: what the service needs from storage, met by ``EmbeddedStore`` (chdb, in
process) and by a future ClickHouse server store (clickhouse-connect) over the same schema.

Conventions: time ranges are half-open ``[start_ns, end_ns)`` in ns since the epoch on the record's event
time; prices, sizes and volumes are exact ints as in the engine; calls are synchronous and may block
(run them in a thread, off the event loop).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Protocol

from server.engine.candles import Candle, Interval
from server.engine.events import Trade
from server.storage.codec import StoredRecord


class Store(Protocol):
    """Persistent market data: batched writes, range queries and event-time replay."""

    def write_batch(self, records: Sequence[object]) -> int:
        """Persist the storable records of ``records`` (one bulk insert per table); returns how many.

        Records of other types (NBBO, tickers, clock ticks...) are skipped. Writing a record again is
        harmless: each table replaces rows with the same identity (see migrations/clickhouse).
        """
        ...

    def flush(self) -> None:
        """Make everything written so far durable / visible to readers."""
        ...

    def close(self) -> None:
        """Release the connection; the store is unusable afterwards. Idempotent."""
        ...

    def candles(
        self,
        venue: str,
        symbol: str,
        interval: Interval,
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
        *,
        latest: bool = False,
    ) -> list[Candle]:
        """Candles with ``start_ns <= open_time < end_ns``, oldest first, the latest version of each.

        With ``limit``: the first ``limit`` of the range, or the last ``limit`` when ``latest``.
        """
        ...

    def trades(
        self,
        symbol: str,
        start_ns: int,
        end_ns: int,
        venue: str | None = None,
        limit: int | None = None,
        *,
        latest: bool = False,
    ) -> list[Trade]:
        """Trades of ``symbol`` (all venues, or one) with ``start_ns <= ts_event < end_ns`` in event-time
        order (ties: venue, trade id). With ``limit``: the first ones, or the last ones when ``latest``."""
        ...

    def replay(
        self,
        symbols: Collection[str] | None,
        kinds: Collection[str] | None,
        start_ns: int,
        end_ns: int,
        chunk: int = 50_000,
    ) -> Iterator[list[StoredRecord]]:
        """Stored records of ``kinds`` (``Kind`` values; None = all) for ``symbols`` (None = all) with
        event time in ``[start_ns, end_ns)``, merged across tables in event-time order, in lists of at most
        ``chunk`` records. Memory stays bounded by about ``chunk`` records per kind whatever the range.

        Event time is ``ts_event`` (candles: their last trade's event time) or ``ts`` (pricing). Ties are
        broken by kind (snapshots, deltas, quotes, trades, candles, pricing) then by the table's key.
        """
        ...
