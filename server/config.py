"""Typed, frozen service configuration: defaults, then an optional TOML file, then environment, then flags.

Unknown keys are refused with a message naming them. Secrets (database URLs) are read from the
environment only, never from a file that could be committed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from server.engine.sources import SourcePolicy, parse_source_spec


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """Everything `mds serve` needs. Field docs double as the README's configuration table."""

    grpc_host: str = "127.0.0.1"
    """Address the gRPC server binds (GRPC_HOST)."""
    grpc_port: int = 50051
    """gRPC port (GRPC_PORT); 0 picks a free port."""
    grpc_front: bool = False
    """Serve gRPC from a front process whose event loop does nothing else (MDS_GRPC_FRONT=1;
    `--grpc-front`): lower stream latency under load, one more process."""
    metrics_port: int = 9100
    """Prometheus metrics port (METRICS_PORT); 0 picks a free port, -1 turns metrics off."""
    http_port: int = 8080
    """HTTP/WebSocket gateway port (HTTP_PORT), used by the gateway."""
    data_dir: str = "data"
    """Embedded storage directory (MDS_DATA_DIR)."""
    feeds: tuple[str, ...] = ("sim",)
    """Feed specs (MDS_FEEDS, comma-separated; `--feed` repeatable): sim[:k=v,...] or file:<format>:<path>."""
    tick_interval_ms: int = 100
    """Cadence of the engine's clock ticks (candle closes, staleness, pricing)."""
    ingest_queue_batches: int = 1024
    """Bound of the ingest queue between feeds and the engine, in batches (feeds wait when full)."""
    ingest_queue_events: int = 20_000
    """Bound of the same queue in events: a feed waits while this many are queued (a batch is still taken
    whole when the queue is empty)."""
    max_book_depth: int = 1000
    """Largest depth a book request or subscription may ask for."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest gRPC message the server sends or receives."""
    storage_flush_ms: int = 5000
    """Storage writes what waited this long (or 200,000 records, whichever comes first) in one bulk insert per
    table (MDS_STORAGE_FLUSH_MS). Each insert costs ClickHouse a new part (about a dozen files) at a CPU cost
    that hardly depends on its size, so fewer inserts leave more CPU to the streams. A graceful stop writes
    everything, and an at-least-once feed's barrier and a feed that ends (a replayed file) force a write; a
    crash loses up to this much of the other feeds' data, plus what waited to be encoded while the engine was
    behind (``server.runtime.PREPARE_BACKLOG``)."""
    grace_s: float = 5.0
    """Graceful-stop grace: streams drain and storage flushes within this many seconds."""
    log_level: str = "INFO"
    """Log level of the JSON logs (MDS_LOG_LEVEL)."""
    sources: tuple[str, ...] = ()
    """Source priority per instrument (MDS_SOURCES, ';'-separated; `--source` repeatable):
    SYMBOL=VENUE[:SILENCE],...[@COMPOSITE], best first, e.g. BTC/USD=mx:500ms,binance,kraken@primary."""
    source_silence_ms: int = 1000
    """Silence threshold of a source listed without one."""
    source_hold_ms: int = 2000
    """Hold-down: a recovered source takes over from a healthy lower-ranked one after this long healthy."""

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be within 0..65535, not {port}")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be within -1..65535, not {self.metrics_port}")
        if not self.feeds:
            raise ConfigError("at least one feed is needed (e.g. --feed sim)")
        if (self.tick_interval_ms <= 0 or self.ingest_queue_batches <= 0 or self.ingest_queue_events <= 0
                or self.max_book_depth <= 0):
            raise ConfigError("tick_interval_ms, ingest_queue_batches, ingest_queue_events and max_book_depth "
                              "must be > 0")
        if self.storage_flush_ms <= 0:
            raise ConfigError(f"storage_flush_ms must be > 0, not {self.storage_flush_ms}")
        if self.grace_s < 0:
            raise ConfigError("grace_s must be >= 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        if self.source_silence_ms <= 0 or self.source_hold_ms < 0:
            raise ConfigError("source_silence_ms must be > 0 and source_hold_ms >= 0")
        self.source_policies()  # refuses a bad spec now, not when serving

    def source_policies(self) -> tuple[SourcePolicy, ...]:
        """The parsed ``sources``; ConfigError for a bad spec or two specs for one symbol."""
        policies: list[SourcePolicy] = []
        for spec in self.sources:
            try:
                policies.append(parse_source_spec(spec, default_silence_ns=self.source_silence_ms * 1_000_000,
                                                  hold_ns=self.source_hold_ms * 1_000_000))
            except ValueError as exc:
                raise ConfigError(f"sources: {exc}") from None
        symbols = [p.symbol for p in policies]
        twice = sorted({s for s in symbols if symbols.count(s) > 1})
        if twice:
            raise ConfigError(f"sources: more than one spec for {', '.join(twice)}")
        return tuple(policies)


_ENV = {
    "GRPC_HOST": "grpc_host",
    "GRPC_PORT": "grpc_port",
    "MDS_GRPC_FRONT": "grpc_front",
    "METRICS_PORT": "metrics_port",
    "HTTP_PORT": "http_port",
    "MDS_DATA_DIR": "data_dir",
    "MDS_FEEDS": "feeds",
    "MDS_LOG_LEVEL": "log_level",
    "MDS_SOURCES": "sources",
    "MDS_STORAGE_FLUSH_MS": "storage_flush_ms",
}


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ServiceConfig)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false, 1/0, yes/no or on/off")
        if kind == "tuple[str, ...]":
            # A source spec holds commas: a text list of them is ';'-separated.
            items = value.split(";" if name == "sources" else ",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {value!r} ({exc})") from None


def load_config(file: str | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServiceConfig:
    """Defaults < TOML file (keys as field names) < environment < explicit overrides (flags)."""
    known = {f.name for f in fields(ServiceConfig)}
    values: dict[str, Any] = {}
    if file:
        with Path(file).open("rb") as f:
            data = tomllib.load(f)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in {file}: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        values.update(data)
    environ = os.environ if env is None else env
    for var, name in _ENV.items():
        if var in environ and environ[var] != "":
            values[name] = environ[var]
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    return ServiceConfig(**{k: _coerce(k, v) for k, v in values.items()})
