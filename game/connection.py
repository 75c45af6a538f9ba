"""The explorer's one dependency on the runtime: a connection to a `magworld serve` process.

Everything the game needs from the runtime goes through `Connection` (over runtime/client.py),
so a change in the client or the protocol is absorbed here. `spawn_server` starts
`magworld serve` in a child process on a free loopback port when the user gave no address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.client import Client, ServerError, ServerUnavailable
from worldmodel.data.engine import EngineSettings

RuntimeFailure = (ServerError, ServerUnavailable)  # what a request may raise besides a bug
DEFAULT_FPS = EngineSettings().fps  # the data's frame rate (35 tics/s, frame skip 2) until info says


@dataclass
class ModelInfo:
    """What the game needs to know about the model behind the runtime."""

    model: str
    device: str
    backend: str
    block_size: int  # B: frames per step
    height: int
    width: int
    fps: float  # frames per second the model was trained at
    scenes: int
    capacity: int  # memory slots
    bytes_per_slot: int
    strategy: str
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class StepResult:
    frames: np.ndarray  # [B, H, W, 3] uint8
    poses: np.ndarray  # [B, 5] float32: the pose the runtime assigned to each frame
    first_frame: int  # absolute index of frames[0]
    next_frame: int
    revisit: dict | None  # the runtime's revisit report (runtime/revisit.py), when it made one
    memory_used: int
    memory_capacity: int
    bytes_held: int
    frames_per_slot: float | None  # frames of history one slot stands for (None: the server does not say)
    oldest_frame: int | None  # frame index of the oldest slot held (None: memory empty)
    model_ms: float
    latency_ms: float  # round trip measured here


class Connection:
    def __init__(self, endpoint: str, timeout_s: float = 30.0, retries: int = 2):
        self.endpoint = endpoint
        self.client = Client(endpoint, timeout_s=timeout_s, retries=retries)
        self.info: ModelInfo | None = None

    def fetch_info(self) -> ModelInfo:
        h = self.client.info().raw
        height, width, _ = h["frame_shape"]
        mem = h.get("memory", {})
        self.info = ModelInfo(
            model=h.get("model", "?"), device=h.get("device", "?"), backend=h.get("backend", "?"),
            block_size=int(h["block_size"]), height=int(height), width=int(width),
            fps=float(h.get("fps") or DEFAULT_FPS), scenes=int(h.get("scenes") or 0),
            capacity=int(mem.get("capacity", 0)), bytes_per_slot=int(mem.get("bytes_per_slot", 0)),
            strategy=str(mem.get("strategy", "?")), raw=h,
        )
        return self.info

    def reset(self, frames: np.ndarray, actions: np.ndarray, poses: np.ndarray | None,
              seed: int = 0, scene: int | None = None) -> dict:
        """New session, then the start frames [n, H, W, 3] written into memory with `observe`."""
        self.client.reset(seed=seed, scene=scene)
        return self.client.observe(frames, actions, poses)

    def step(self, actions: np.ndarray, poses: np.ndarray | None = None) -> StepResult:
        t0 = time.perf_counter()
        block = self.client.step(actions, poses)
        latency = 1000 * (time.perf_counter() - t0)
        h = block.header
        mem = h.get("memory") or {}
        return StepResult(
            frames=block.frames, poses=block.poses, first_frame=block.first_frame,
            next_frame=int(h.get("next_frame", block.first_frame + len(block.frames))), revisit=block.revisit,
            memory_used=int(mem.get("used", 0)), memory_capacity=int(mem.get("capacity", 0)),
            bytes_held=int(mem.get("bytes_held", 0)), frames_per_slot=mem.get("frames_per_slot"),
            oldest_frame=mem.get("oldest_frame"), model_ms=float(block.timings.get("model_ms", 0.0)),
            latency_ms=latency,
        )

    def memory_slots(self) -> list[dict]:
        """The slot table: [{"slot", "frame", "pose"}], oldest frame first."""
        return sorted(self.client.memory().get("slots", []), key=lambda s: s["frame"])

    def decode_slot(self, slot: int) -> np.ndarray:
        """The memory's own view of a slot: [B, H, W, 3] uint8 (last frame = the slot's)."""
        return self.client.decode_memory(slot)

    def close(self) -> None:
        try:
            self.client.close()
        except RuntimeFailure:
            pass  # the server may already be gone; its session idles out
        finally:
            self.client.close_socket()


# ---------------------------------------------------------------------- a server of our own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`magworld serve` in a child process on a free loopback port; stopped on `stop()`."""

    def __init__(self, checkpoint: str | None = None, preset: str | None = None, random_weights: bool = False,
                 device: str | None = None, extra: list[str] | None = None):
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "worldmodel.cli", "serve", "--bind", self.endpoint, "--device", device,
               "--max-sessions", "2"]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        if preset:
            cmd += ["--preset", preset]
        if random_weights:
            cmd += ["--random-weights"]
        self.cmd = cmd + list(extra or [])
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until the server answers `info`; raises with its log if it dies or does not answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the runtime exited with status {self.proc.returncode}:\n{self.output()}")
            probe = Client(self.endpoint, timeout_s=1.0, retries=0)
            try:
                probe.info()
                return
            except ServerUnavailable:
                continue
            finally:
                probe.close_socket()
        self.stop()
        raise RuntimeError(f"the runtime did not answer within {timeout_s:g} s:\n{self.output()}")

    def output(self, tail: int = 4000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-tail:]

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the server stops its loop on SIGTERM
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
