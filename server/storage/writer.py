"""``StorageWriter``: accumulate engine records and write them to a ``Store`` in batches.

A batch is written when ``max_records`` records are pending, or when the oldest pending record has waited
``flush_interval_ns`` by the caller's clock (checked on ``add``/``extend`` and on ``poll``, which the
caller invokes periodically). Synchronous: the service runs it in a thread off the event loop. Not
thread-safe by itself: one thread owns a writer.

If a write fails, the records stay pending (a later flush retries them; rows replace by identity, so a
retry of a partly applied batch never duplicates) and the error propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from server.storage.protocol import Store


class StorageWriter:
    """Batches records for ``store``; ``clock()`` is the current time in ns (e.g. ``time.monotonic_ns``)."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], int],
        *,
        max_records: int = 50_000,
        flush_interval_ns: int = 250_000_000,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if flush_interval_ns < 0:
            raise ValueError(f"flush_interval_ns must be >= 0, got {flush_interval_ns}")
        self.store = store
        self.clock = clock
        self.max_records = max_records
        self.flush_interval_ns = flush_interval_ns
        self._pending: list[object] = []
        self._first_ns = 0  # clock time when the oldest pending record was added
        self.rows_written = 0
        self.batches_written = 0

    @property
    def pending(self) -> int:
        """Records accumulated and not written yet."""
        return len(self._pending)

    def add(self, record: object) -> int:
        """Queue one record; writes when a limit is reached. Returns the rows written by this call."""
        if not self._pending:
            self._first_ns = self.clock()
        self._pending.append(record)
        return self._maybe_flush()

    def extend(self, records: Iterable[object]) -> int:
        """Queue several records; writes full batches of ``max_records`` as they fill up."""
        written = 0
        for rec in records:
            if not self._pending:
                self._first_ns = self.clock()
            self._pending.append(rec)
            if len(self._pending) >= self.max_records:
                written += self.flush()
        return written + self._maybe_flush()

    def poll(self) -> int:
        """Write the pending records if the oldest has waited ``flush_interval_ns``; returns rows written."""
        return self._maybe_flush()

    def flush(self) -> int:
        """Write every pending record now; returns the rows written."""
        if not self._pending:
            return 0
        batch = self._pending
        written = self.store.write_batch(batch)  # on error the records stay pending
        self._pending = []
        self.rows_written += written
        self.batches_written += 1
        return written

    def close(self) -> int:
        """Write what is pending and flush the store (which stays open: its owner closes it)."""
        written = self.flush()
        self.store.flush()
        return written

    def _maybe_flush(self) -> int:
        if not self._pending:
            return 0
        if len(self._pending) >= self.max_records or self.clock() - self._first_ns >= self.flush_interval_ns:
            return self.flush()
        return 0
