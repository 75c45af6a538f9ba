"""A real `magworld serve` process on loopback, for the runtime tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

STARTUP_S = 60


def tiny_checkpoint(folder: Path) -> Path:
    """Untrained tiny model saved as a checkpoint directory (safetensors + config.json)."""
    from worldmodel.bundle import WorldModel
    from worldmodel.config import preset

    if not (folder / "config.json").exists():
        WorldModel.random(preset("tiny")).save(folder)
    return folder


class ServerProcess:
    """`magworld serve` in a child process; `endpoint` is the ROUTER address it bound."""

    def __init__(self, checkpoint: Path, *args: str, bind: str = "tcp://127.0.0.1:*"):
        cmd = [sys.executable, "-m", "worldmodel.cli", "serve", "--checkpoint", str(checkpoint), "--device", "cpu",
               "--bind", bind, "--threads", "1", *args]
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.endpoint = self.pub_endpoint = None
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(STARTUP_S) or self.endpoint is None:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def _drain(self):
        # The server logs to stderr; reading it keeps the pipe from filling and records the lines.
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on (\S+?)(?:,| \()", line)
            if m:
                self.endpoint = m.group(1)
                p = re.search(r"published on (\S+)", line)
                self.pub_endpoint = p.group(1) if p else None
                self._ready.set()
        self._ready.set()

    def log(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pan_actions(block: int, turn: float) -> np.ndarray:
    """A block of pure turns: [block, 4]."""
    a = np.zeros((block, 4), np.float32)
    a[:, 0] = turn
    return a
