"""The local MongoDB-protocol server (SecantusDB) for development and tests.

It is GPL-2.0 and therefore only ever started as a separate process, never imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def secantus_binary() -> str:
    exe = Path(sys.executable).parent / "secantusd-py"
    found = str(exe) if exe.exists() else shutil.which("secantusd-py")
    if not found:
        raise RuntimeError(
            "secantusd-py not found: install the dev extras (`pip install secantusdb==0.7.0b3`) "
            "or set CRM_MONGO_URL to a MongoDB server."
        )
    return found


class LocalMongo:
    """A SecantusDB child process on a loopback port; ``stop()`` ends it."""

    def __init__(self, storage: str | Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.storage = str(storage)
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _pid_file(self) -> Path | None:
        return None if self.storage == ":memory:" else Path(self.storage) / "secantusd.pid"

    def _reap_orphan(self) -> None:
        """A server left behind by a hub that was killed holds the storage lock: end it."""
        pid_file = self._pid_file()
        if not pid_file or not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        pid_file.unlink(missing_ok=True)

    def start(self, timeout_s: float = 30.0) -> LocalMongo:
        if self.storage != ":memory:":
            Path(self.storage).mkdir(parents=True, exist_ok=True)
            self._reap_orphan()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(  # noqa: S603
            [
                secantus_binary(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                self.storage,
                "--log-level",
                "WARNING",
            ],
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        if (pid_file := self._pid_file()) is not None:
            pid_file.write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the local MongoDB-protocol server exited ({self.proc.returncode})")
            if _port_open(self.port):
                log.info("local MongoDB-protocol server up", extra={"port": self.port})
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the local MongoDB-protocol server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if (pid_file := self._pid_file()) is not None:
            pid_file.unlink(missing_ok=True)


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the hub process dies, however it dies. (The kernel
    sends it when the *thread* that started the server ends: start it from a thread that lives
    as long as the process, the main one.)"""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
