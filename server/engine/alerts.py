"""Price alerts: a book of one-shot threshold alerts per symbol, evaluated on every price update.

This module owns ``AlertBook`` and its records. An alert fires once, on the first update that crosses its
threshold, and is then removed. Per (symbol, source, venue) the thresholds are kept in sorted lists
(``bisect``), so an update costs O(1) when nothing fires (two int comparisons against the cached nearest
thresholds), and O(log n + k) when k alerts fire (they form a suffix of a sorted list, cut in one slice).
Adding or removing an alert is a binary search plus a list insert/delete (a memmove, O(n) but tiny).

Prices are ints at 1e-9 (see ``numbers``). Change-percent alerts compare ``change_pct`` as given by the
caller with the threshold, in the same units; the convention of the engine is percent points at 1e-9
(a 24 h change of -2.5% is ``-2_500_000_000``, like Binance's ``priceChangePercent``).
"""

from __future__ import annotations

import builtins
from bisect import bisect_left, insort
from enum import IntEnum
from typing import NamedTuple


class AlertCondition(IntEnum):
    """When an alert fires: price >= threshold, price <= threshold, change >= threshold, change <= it."""

    PRICE_ABOVE = 1
    PRICE_BELOW = 2
    CHANGE_PCT_ABOVE = 3
    CHANGE_PCT_BELOW = 4


class AlertSource(IntEnum):
    """Which price stream an alert watches."""

    LAST_TRADE = 1
    NBBO_MID = 2
    MARK = 3


class Alert(NamedTuple):
    """A one-shot alert. ``threshold``: a price (1e-9) or a change percent (1e-9), per ``condition``.

    ``venue`` '' watches the stream of ``source`` from any venue (and the consolidated one); a venue name
    watches only updates evaluated with that venue.
    """

    alert_id: str
    symbol: str
    condition: AlertCondition
    threshold: int
    source: AlertSource
    venue: str = ""
    created_ns: int = 0


class AlertTrigger(NamedTuple):
    """An alert that fired: the update's price and change percent (None if not given) at ``ts``."""

    alert: Alert
    price: int
    change_pct: int | None
    ts: int


_NO_ABOVE = 1 << 256
"""Cached lowest ABOVE threshold when there is none: larger than any price."""
_NO_BELOW = -(1 << 256)
"""Cached highest BELOW threshold when there is none: smaller than any price."""

# An entry is (key, -seq, alert): ABOVE lists use key = -threshold, BELOW lists key = threshold, both
# ascending, so that the crossed alerts are always a suffix and the nearest threshold is the last entry.
# -seq breaks ties so that, walking a crossed suffix backwards, older alerts fire first.
_Entry = tuple[int, int, Alert]


class _Bucket:
    """Alerts of one (symbol, source, venue): four sorted lists and the cached nearest thresholds."""

    __slots__ = (
        "chg_above",
        "chg_below",
        "count",
        "max_chg_below",
        "max_price_below",
        "min_chg_above",
        "min_price_above",
        "price_above",
        "price_below",
    )

    def __init__(self) -> None:
        self.price_above: list[_Entry] = []
        self.price_below: list[_Entry] = []
        self.chg_above: list[_Entry] = []
        self.chg_below: list[_Entry] = []
        self.min_price_above = _NO_ABOVE
        self.max_price_below = _NO_BELOW
        self.min_chg_above = _NO_ABOVE
        self.max_chg_below = _NO_BELOW
        self.count = 0

    def refresh(self) -> None:
        pa, pb, ca, cb = self.price_above, self.price_below, self.chg_above, self.chg_below
        self.min_price_above = -pa[-1][0] if pa else _NO_ABOVE
        self.max_price_below = pb[-1][0] if pb else _NO_BELOW
        self.min_chg_above = -ca[-1][0] if ca else _NO_ABOVE
        self.max_chg_below = cb[-1][0] if cb else _NO_BELOW

    def lists(self, condition: AlertCondition) -> tuple[list[_Entry], bool]:
        """The list holding ``condition`` and whether its key is the negated threshold."""
        if condition is AlertCondition.PRICE_ABOVE:
            return self.price_above, True
        if condition is AlertCondition.PRICE_BELOW:
            return self.price_below, False
        if condition is AlertCondition.CHANGE_PCT_ABOVE:
            return self.chg_above, True
        return self.chg_below, False


_BucketKey = tuple[str, AlertSource, str]


class AlertBook:
    """All live alerts, indexed for cheap evaluation.

    ``evaluate`` is meant to be called on every price update of a stream: the fast path (nothing crosses)
    is a dict lookup and a few int comparisons per matching bucket.
    """

    __slots__ = ("_buckets", "_by_id", "_seq")

    def __init__(self) -> None:
        self._buckets: dict[_BucketKey, _Bucket] = {}
        self._by_id: dict[str, tuple[Alert, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._by_id

    def add(self, alert: Alert) -> None:
        """Register an alert. Raises ValueError for a duplicate id or an invalid alert."""
        if not alert.alert_id:
            raise ValueError("Alert.alert_id must be non-empty")
        if alert.alert_id in self._by_id:
            raise ValueError(f"duplicate alert id {alert.alert_id!r}")
        if not alert.symbol:
            raise ValueError(f"alert {alert.alert_id!r}: symbol must be non-empty")
        try:
            condition = AlertCondition(alert.condition)
            source = AlertSource(alert.source)
        except ValueError as exc:
            raise ValueError(f"alert {alert.alert_id!r}: {exc}") from None
        if condition <= AlertCondition.PRICE_BELOW and alert.threshold <= 0:
            raise ValueError(f"alert {alert.alert_id!r}: a price threshold must be > 0")
        if condition is not alert.condition or source is not alert.source:
            alert = alert._replace(condition=condition, source=source)
        self._seq += 1
        seq = self._seq
        key = (alert.symbol, source, alert.venue)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        lst, negate = bucket.lists(condition)
        insort(lst, (-alert.threshold if negate else alert.threshold, -seq, alert))
        bucket.count += 1
        bucket.refresh()
        self._by_id[alert.alert_id] = (alert, seq)

    def remove(self, alert_id: str) -> bool:
        """Delete an alert; False if there is none with that id (e.g. it already fired)."""
        found = self._by_id.pop(alert_id, None)
        if found is None:
            return False
        alert, seq = found
        key = (alert.symbol, alert.source, alert.venue)
        bucket = self._buckets[key]
        lst, negate = bucket.lists(alert.condition)
        entry = (-alert.threshold if negate else alert.threshold, -seq, alert)
        i = bisect_left(lst, entry)
        del lst[i]
        bucket.count -= 1
        if bucket.count:
            bucket.refresh()
        else:
            del self._buckets[key]
        return True

    def get(self, alert_id: str) -> Alert | None:
        """The live alert with that id, or None."""
        found = self._by_id.get(alert_id)
        return found[0] if found is not None else None

    def list(self, symbol: str | None = None) -> builtins.list[Alert]:
        """Live alerts (of ``symbol``, or all), in the order they were added."""
        return [a for a, _ in self._by_id.values() if symbol is None or a.symbol == symbol]

    def evaluate(
        self,
        symbol: str,
        source: AlertSource,
        price: int,
        change_pct: int | None,
        ts: int,
        out: builtins.list[AlertTrigger],
        venue: str = "",
    ) -> None:
        """Fire every alert crossed by this update: append an ``AlertTrigger`` to ``out`` and remove it.

        Matching alerts: same symbol and source, and venue '' or equal to ``venue``. PRICE_ABOVE fires when
        ``price >= threshold``, PRICE_BELOW when ``price <= threshold``; the CHANGE_PCT conditions compare
        ``change_pct`` likewise and are skipped when it is None. Within a list, triggers come nearest
        threshold first, ties in the order the alerts were added.
        """
        # Fast path: compare with the cached nearest thresholds before touching any list.
        key = (symbol, source, "")
        b = self._buckets.get(key)
        if b is not None and (
            price >= b.min_price_above
            or price <= b.max_price_below
            or (change_pct is not None and (change_pct >= b.min_chg_above or change_pct <= b.max_chg_below))
        ):
            self._check(b, key, price, change_pct, ts, out)
        if venue:
            key = (symbol, source, venue)
            b = self._buckets.get(key)
            if b is not None and (
                price >= b.min_price_above
                or price <= b.max_price_below
                or (
                    change_pct is not None
                    and (change_pct >= b.min_chg_above or change_pct <= b.max_chg_below)
                )
            ):
                self._check(b, key, price, change_pct, ts, out)

    def _check(
        self,
        bucket: _Bucket,
        key: _BucketKey,
        price: int,
        change_pct: int | None,
        ts: int,
        out: builtins.list[AlertTrigger],
    ) -> None:
        fired = False
        if price >= bucket.min_price_above:
            fired = True
            self._fire(bucket.price_above, -price, price, change_pct, ts, out)
        if price <= bucket.max_price_below:
            fired = True
            self._fire(bucket.price_below, price, price, change_pct, ts, out)
        if change_pct is not None:
            if change_pct >= bucket.min_chg_above:
                fired = True
                self._fire(bucket.chg_above, -change_pct, price, change_pct, ts, out)
            if change_pct <= bucket.max_chg_below:
                fired = True
                self._fire(bucket.chg_below, change_pct, price, change_pct, ts, out)
        if fired:
            bucket.count = (
                len(bucket.price_above)
                + len(bucket.price_below)
                + len(bucket.chg_above)
                + len(bucket.chg_below)
            )
            if bucket.count:
                bucket.refresh()
            else:
                del self._buckets[key]

    def _fire(
        self,
        lst: builtins.list[_Entry],
        bound: int,
        price: int,
        change_pct: int | None,
        ts: int,
        out: builtins.list[AlertTrigger],
    ) -> None:
        # Crossed entries have key >= bound: a suffix of the ascending list.
        i = bisect_left(lst, (bound,))
        by_id = self._by_id
        for j in range(len(lst) - 1, i - 1, -1):
            alert = lst[j][2]
            del by_id[alert.alert_id]
            out.append(AlertTrigger(alert, price, change_pct, ts))
        del lst[i:]
