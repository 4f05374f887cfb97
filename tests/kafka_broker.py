"""A real Apache Kafka broker for tests: KRaft, one node, on 127.0.0.1, started and always stopped here.

``kafka_broker()`` is a context manager: it fetches the jars (``scripts/kafka.sh fetch``, Maven
Central, cached), picks two free loopback ports, lets ``scripts/kafka.sh run`` format the storage of a
fresh temporary folder and run the broker in its own process group, waits until a Kafka client can
talk to it, yields a ``KafkaBroker`` and, whatever happens, kills the whole process group and removes
the folder (kept when ``MDS_KEEP_KAFKA=1``, for a post-mortem). On Linux the broker also dies with the
test process (PR_SET_PDEATHSIG), so not even a killed pytest leaks it.

``kafka_broker_fixture()`` makes a pytest fixture of it (session scope by default: one broker for the
whole run). A broker that cannot be had fails the test, unless ``MDS_SKIP_KAFKA=1`` (then it skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "kafka.sh"
FETCH_TIMEOUT_S = 480.0
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


class KafkaUnavailableError(RuntimeError):
    """The broker could not be fetched or started; the message says why."""


class KafkaBroker(NamedTuple):
    """A running test broker."""

    bootstrap: str
    port: int
    directory: Path
    pid: int


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch_libs(timeout: float = FETCH_TIMEOUT_S) -> Path:
    """The folder of the broker's jars (``scripts/kafka.sh fetch``: mvn the first time, then instant)."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise KafkaUnavailableError(f"{tool} is not on PATH: the Kafka test broker needs Java 17+ and Maven")
    try:
        done = subprocess.run([str(SCRIPT), "fetch"], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KafkaUnavailableError(f"scripts/kafka.sh fetch took more than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise KafkaUnavailableError(f"scripts/kafka.sh fetch failed ({done.returncode}): {done.stderr[-2000:]}")
    libs = Path(done.stdout.strip().splitlines()[-1])
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaUnavailableError(f"no kafka_2.13 jar in {libs}")
    return libs


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


async def _probe(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.describe_cluster()
    finally:
        await admin.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM the broker's process group, then KILL it if it is not gone in time."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # anything left in the group
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def kafka_broker(start_timeout: float = START_TIMEOUT_S, *, directory: Path | None = None, port: int | None = None,
                 controller_port: int | None = None) -> Iterator[KafkaBroker]:
    """Run a single-node KRaft broker on loopback for the ``with`` block (see the module docstring).

    By default on a fresh temporary folder and free ports. Given a ``directory`` (kept afterwards) and
    ports, a second ``with`` restarts the same broker with its data: a broker restart.
    """
    fetch_libs()
    owned = directory is None
    directory = Path(tempfile.mkdtemp(prefix="mds-kafka-")) if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    cport = free_port() if controller_port is None else controller_port
    while cport == port:
        cport = free_port()
    bootstrap = f"127.0.0.1:{port}"
    out_path = directory / "kafka.out"
    proc: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        with out_path.open("wb") as out:
            proc = subprocess.Popen([str(SCRIPT), "run", str(directory), str(port), str(cport)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)  # noqa: PLW1509  # nothing else runs threads here
        deadline = time.monotonic() + start_timeout
        last: BaseException | None = None
        while True:
            if proc.poll() is not None:
                raise KafkaUnavailableError(
                    f"the Kafka broker exited with {proc.returncode}:\n{_tail(out_path)}\n"
                    f"{_tail(directory / 'logs' / 'server.log')}")
            try:
                if _listening(port):  # a plain TCP check first: aiokafka logs every refused connection
                    asyncio.run(asyncio.wait_for(_probe(bootstrap), 10))
                    break
            except Exception as exc:  # not up yet: connection refused, no controller yet, ...
                last = exc
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"the Kafka broker did not answer on {bootstrap} within {start_timeout:.0f} s ({last!r}):\n"
                    f"{_tail(out_path)}\n{_tail(directory / 'logs' / 'server.log')}")
            time.sleep(0.25)
        yield KafkaBroker(bootstrap, port, directory, proc.pid)
        ok = True
    finally:
        if proc is not None:
            _stop(proc)
        if ok and owned and os.environ.get("MDS_KEEP_KAFKA") != "1":
            shutil.rmtree(directory, ignore_errors=True)
        elif not ok:
            print(f"kafka_broker: broker folder kept for inspection: {directory}", file=sys.stderr)


def kafka_broker_fixture(scope: Literal["session", "package", "module"] = "session"
                         ) -> Callable[..., Iterator[KafkaBroker]]:
    """A pytest fixture yielding a running ``KafkaBroker`` (fails, or skips with ``MDS_SKIP_KAFKA=1``).

    Use it in a conftest.py or a test module: ``kafka = kafka_broker_fixture()``.
    """

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[KafkaBroker]:
        if os.environ.get("MDS_SKIP_KAFKA") == "1":
            pytest.skip("MDS_SKIP_KAFKA=1: no Kafka broker")
        with contextlib.ExitStack() as stack:
            try:
                broker = stack.enter_context(kafka_broker())
            except KafkaUnavailableError as exc:
                pytest.fail(f"no Kafka broker: {exc}", pytrace=False)
            yield broker

    return fixture
