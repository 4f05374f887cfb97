"""End to end: `mds serve --grpc-front` lives and dies with its front process, and a taken port is a clear
error in both modes. (The API itself is tested in both modes by test_serve and test_streams.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from load.stream_load import children as _children
from tests.e2e.test_serve import MODES, ROOT, _free_port, start_service


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_the_service_stops_with_an_error_when_its_front_dies(tmp_path: Path) -> None:
    svc = start_service(tmp_path, "sim:seed=5,rate=500", front=True)
    try:
        [front] = _children(svc.proc.pid)
        os.kill(front, signal.SIGKILL)
        assert svc.proc.wait(timeout=30) == 1  # "mds serve: stopped: the gRPC front process ended unexpectedly"
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()


def test_the_front_ends_with_the_service(tmp_path: Path) -> None:
    svc = start_service(tmp_path, "sim:seed=5,rate=500", front=True)
    [front] = _children(svc.proc.pid)
    svc.proc.kill()
    svc.proc.wait()
    assert _gone(front, 10), "the front process outlived the service"


@pytest.mark.parametrize("mode", MODES)
def test_a_taken_port_is_a_clear_error(tmp_path: Path, mode: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--grpc-port", str(port),
                               "--metrics-port", "-1", "--data-dir", str(tmp_path), "--log-level", "WARNING",
                               *(["--grpc-front"] if mode == "front" else [])],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert f"mds serve: cannot bind gRPC on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr and "CRITICAL" not in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_process_group_stops_both_gracefully(tmp_path: Path, sig: signal.Signals) -> None:
    """A terminal's Ctrl-C (or a supervisor's SIGTERM to the group) reaches the front too: it leaves the
    stop to the service, which exits 0."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--grpc-port", str(port), "--metrics-port",
                             "-1", "--data-dir", str(tmp_path), "--feed", "sim:seed=5,rate=500", "--grpc-front",
                             "--log-level", "WARNING"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert "mds: gRPC on" in proc.stdout.readline()  # printed once serving
        [front] = _children(proc.pid)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert _gone(front, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

