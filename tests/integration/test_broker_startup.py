"""Start-up never hangs silently: a broker that accepts TCP but never answers makes ``crm run`` exit
with a message naming it, and a stop signal ends a start that is stuck."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP listener that accepts every connection and never says a word."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def start_hub(port: int, mongo_url: str, tmp_path: Path, timeout_s: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CRM_RABBIT_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
        "CRM_MONGO_URL": mongo_url,
        "CRM_DATA_DIR": str(tmp_path),
        "CRM_PORT": "0",
        "CRM_ROOT_TOKEN": "root-silent",
        "CRM_BROKER_TIMEOUT_S": str(timeout_s),
        "CRM_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "crm.cli", "run", "all"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_broker_that_never_answers_ends_start_up_with_a_message_naming_it(
    silent_broker: int, mongo_url: str, tmp_path: Path
) -> None:
    proc = start_hub(silent_broker, mongo_url, tmp_path, timeout_s=2)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2
    text = err.decode()
    assert f"127.0.0.1:{silent_broker}" in text
    assert "did not answer the AMQP handshake within 2 s" in text
    assert "guest:guest" not in text  # the password is not printed


def test_sigterm_stops_a_start_that_waits_for_the_broker(
    silent_broker: int, mongo_url: str, tmp_path: Path
) -> None:
    proc = start_hub(silent_broker, mongo_url, tmp_path, timeout_s=300)
    try:
        time.sleep(3)  # well inside the broker handshake that never completes
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)  # raises if the stop takes longer than 10 s
    finally:
        proc.kill()
    assert proc.returncode is not None
