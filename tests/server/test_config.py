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
