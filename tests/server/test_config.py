"""ServiceConfig: defaults, file < environment < flags, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, ServiceConfig, load_config


def test_defaults_match_the_readme() -> None:
    config = load_config(env={})
    assert (config.grpc_host, config.grpc_port, config.metrics_port, config.http_port) == (
        "127.0.0.1", 50051, 9100, 8080)
    assert config.feeds == ("sim",)
    assert config.grpc_front is False
    assert config.storage_flush_ms == 5000


def test_storage_flush_from_env_and_refused_when_not_positive() -> None:
    assert load_config(env={"MDS_STORAGE_FLUSH_MS": "1000"}).storage_flush_ms == 1000
    with pytest.raises(ConfigError, match="storage_flush_ms must be > 0"):
        load_config(env={"MDS_STORAGE_FLUSH_MS": "0"})


def test_grpc_front_from_file_env_and_flag(tmp_path: Path) -> None:
    file = tmp_path / "mds.toml"
    file.write_text("grpc_front = true\n")
    assert load_config(str(file), env={}).grpc_front is True
    assert load_config(str(file), env={"MDS_GRPC_FRONT": "0"}).grpc_front is False
    for text in ("1", "true", "YES", "on"):
        assert load_config(env={"MDS_GRPC_FRONT": text}).grpc_front is True
    assert load_config(env={}, overrides={"grpc_front": True}).grpc_front is True
    with pytest.raises(ConfigError, match=r"grpc_front.*true/false"):
        load_config(env={"MDS_GRPC_FRONT": "maybe"})


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    file = tmp_path / "mds.toml"
    file.write_text('grpc_port = 6000\nmetrics_port = 6001\nfeeds = ["sim:seed=1"]\n')
    config = load_config(str(file), env={"GRPC_PORT": "7000", "MDS_FEEDS": "sim:seed=2,file:x:y"},
                         overrides={"grpc_port": 8000})
    assert config.grpc_port == 8000
    assert config.metrics_port == 6001
    assert config.feeds == ("sim:seed=2", "file:x:y")


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "mds.toml"
    file.write_text("grpc_prot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key.*grpc_prot"):
        load_config(str(file), env={})
    with pytest.raises(ConfigError, match=r"GRPC_PORT|grpc_port"):
        load_config(env={"GRPC_PORT": "http"})
    with pytest.raises(ConfigError, match="65535"):
        load_config(env={"GRPC_PORT": "70000"})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(env={}, overrides={"colour": "red"})
    with pytest.raises(TypeError):
        ServiceConfig(colour="red")  # type: ignore[call-arg]


def test_sources_from_file_env_and_flags(tmp_path: Path) -> None:
    file = tmp_path / "mds.toml"
    file.write_text('sources = ["BTC/USD=mx:500ms,binance,kraken@primary"]\nsource_silence_ms = 800\n'
                    "source_hold_ms = 3000\n")
    config = load_config(str(file), env={})
    (policy,) = config.source_policies()
    assert policy.symbol == "BTC/USD" and policy.sources == ("mx", "binance", "kraken")
    assert policy.silence_ns == (500_000_000, 800_000_000, 800_000_000)
    assert policy.composite == "primary" and policy.hold_ns == 3_000_000_000
    env = load_config(str(file), env={"MDS_SOURCES": "BTC/USD=a,b@c; ETH/USD=d:2s,e"})
    assert env.sources == ("BTC/USD=a,b@c", "ETH/USD=d:2s,e")
    assert [p.composite for p in env.source_policies()] == ["c", "primary"]
    flags = load_config(env={}, overrides={"sources": ("SOL/USD=x,y",)})
    assert [p.sources for p in flags.source_policies()] == [("x", "y")]
    assert load_config(env={}).source_policies() == ()


def test_bad_sources_are_refused() -> None:
    with pytest.raises(ConfigError, match="sources: bad source spec"):
        load_config(env={"MDS_SOURCES": "BTC/USD"})
    with pytest.raises(ConfigError, match=r"sources: .*duration"):
        load_config(env={}, overrides={"sources": ("BTC/USD=a:5 parsecs,b",)})
    with pytest.raises(ConfigError, match="more than one spec for BTC/USD"):
        load_config(env={"MDS_SOURCES": "BTC/USD=a,b;BTC/USD=c"})
    with pytest.raises(ConfigError, match="composite venue"):
        load_config(env={"MDS_SOURCES": "BTC/USD=a,b@a"})
    with pytest.raises(ConfigError, match="source_silence_ms"):
        load_config(env={}, overrides={"source_silence_ms": 0})
