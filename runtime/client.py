"""Python client for the magworld server (protocol v2, docs/protocol.md).

    from game.truth import TruthEngine  # ViZDoom, for real frames; in your game, its own frames
    from runtime.client import Client

    with Client("tcp://127.0.0.1:5555") as c:
        info = c.info()
        h, w, _ = info.frame_shape
        engine = TruthEngine("freedoom2.wad:MAP01", h, w)
        start = engine.start(info.block_size)  # one block standing still: frames [B, H, W, 3] uint8
        engine.close()
        c.reset(seed=1)
        c.observe(start.frames, start.actions, start.poses)     # real frames into memory first
        block = c.step([[5.625, 0, 0, 0]] * info.block_size)   # block.frames: [B, H, W, 3] uint8
        c.close()                                               # frees the session's memory now

Observe first: with an empty memory the model has no world to continue, and the first blocks are a
noisy texture, not a view (the shipped doom-cpu, one block turning left: 13.8 dB PSNR against
ViZDoom from an empty memory, 23.7 dB after observing one block of its frames).

Sessions: `reset` returns a token, and the client puts it in every later request by itself; the
server knows the session by that token, not by the socket.

Reliability is the Lazy Pirate pattern: a REQ socket, a timeout per request, and on a timeout the
socket is closed, a new one opened, and the request sent again with the same `id` (and token).
The server answers a repeated request from its stored reply instead of running it twice, so a
retried `step` never skips a block. `heartbeat()` asks whether the server (and the session) is alive.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import zmq


class ServerError(Exception):
    """The server answered with status `error`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerUnavailable(TimeoutError):
    """No reply after every retry."""


@dataclass
class Info:
    protocol: int
    model: str
    block_size: int
    frame_shape: tuple[int, int, int]
    actions: list[dict]
    memory: dict
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class Block:
    frames: np.ndarray  # [B, H, W, 3] uint8
    poses: np.ndarray  # [B, pose_dim] float32
    first_frame: int
    timings: dict
    revisit: dict | None
    header: dict = field(repr=False, default_factory=dict)


class Client:
    def __init__(self, endpoint: str, timeout_s: float = 10.0, retries: int = 3, identity: bytes | None = None,
                 curve_server_key: bytes | None = None, curve_client_keys: tuple[bytes, bytes] | None = None,
                 context: zmq.Context | None = None):
        """curve_server_key: the server's public key (z85) when it serves over CURVE;
        curve_client_keys: this client's (public, secret) pair when the server has an allow-list
        (default: a fresh pair)."""
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.retries = retries
        self.identity = identity  # None: each socket gets its own (the session follows the token)
        self.token: str | None = None  # the session's credential, from `reset`
        self.curve_server_key = curve_server_key
        self.curve_client_keys = curve_client_keys
        self.ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self.sock = None
        self._connect()

    # ------------------------------------------------------------------ transport

    def _connect(self) -> None:
        self.sock = self.ctx.socket(zmq.REQ)
        if self.identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, self.identity)
        self.sock.setsockopt(zmq.LINGER, 0)
        # A send can block too: a REQ socket whose connection was torn down (a CURVE handshake the
        # server refused, say) has no peer to queue to until it reconnects. Bound it like the reply.
        self.sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        if self.curve_server_key is not None:
            public, secret = self.curve_client_keys or zmq.curve_keypair()
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = self.curve_server_key
        self.sock.connect(self.endpoint)

    def request(self, header: dict, payload: bytes | None = None) -> tuple[dict, list[bytes]]:
        """Send one request, wait for its reply (retrying), raise ServerError on status error.
        Returns (reply header, binary parts)."""
        header = {"id": f"{self._prefix}-{next(self._ids)}", **header}
        if self.token is not None and header["op"] != "info":
            header["token"] = self.token
        parts = [json.dumps(header, allow_nan=False).encode()]
        if payload is not None:
            parts.append(payload)
        for attempt in range(self.retries + 1):
            try:
                self.sock.send_multipart(parts)
                sent = True
            except zmq.Again:  # no peer to send to within the timeout: a try that failed
                sent = False
            if sent and self.sock.poll(self.timeout_ms, zmq.POLLIN):
                reply = self.sock.recv_multipart()
                head = json.loads(reply[0])
                if head.get("status") != "ok":
                    err = head.get("error") or {}
                    raise ServerError(err.get("code", "unknown"), err.get("message", ""))
                return head, reply[1:]
            # Lazy Pirate: the REQ socket is stuck waiting; replace it and send again. A fixed
            # routing id waits a moment so the server has let the old connection go.
            self.sock.close(linger=0)
            if self.identity is not None:
                time.sleep(0.1)
            self._connect()
        raise ServerUnavailable(f"no reply from {self.endpoint} to {header['op']!r} after {self.retries + 1} tries "
                                f"of {self.timeout_ms} ms")

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Releases the socket only: the server frees the session on `close()` or when it idles out.
        self.close_socket()

    # ------------------------------------------------------------------ ops

    def info(self) -> Info:
        h, _ = self.request({"op": "info"})
        return Info(h["protocol"], h["model"], h["block_size"], tuple(h["frame_shape"]), h["actions"], h["memory"], h)

    def reset(self, seed: int = 0, scene: int | None = None, frames: np.ndarray | None = None,
              actions=None, poses=None, strategy: str | None = None, capacity: int | None = None,
              memory_bytes: int | None = None, attention_budget: int | None = None,
              revisit: bool = True, revisit_decode: bool = True, retrieval: bool = True) -> dict:
        """Start (or restart) this client's session. frames: optional start frames [n, H, W, 3] uint8
        (n a whole number of blocks) with their actions [n, A] and poses [n, P]. retrieval=False:
        `mag` attends to its newest slots only (an ablation)."""
        header = {"op": "reset", "seed": seed, "scene": scene, "strategy": strategy, "capacity": capacity,
                  "memory_bytes": memory_bytes, "attention_budget": attention_budget, "revisit": revisit,
                  "revisit_decode": revisit_decode, "retrieval": retrieval}
        header = {k: v for k, v in header.items() if v is not None}
        payload = None
        if frames is not None:
            frames = _frames(frames)
            header.update(shape=list(frames.shape), dtype="uint8", actions=_rows(actions), poses=_rows(poses))
            payload = frames.tobytes()
        h, _ = self.request(header, payload)  # a token the server no longer knows opens a new session
        self.token = h["token"]
        return h

    def observe(self, frames: np.ndarray, actions, poses=None) -> dict:
        """Write real frames [n, H, W, 3] uint8 (n a whole number of blocks) into memory."""
        frames = _frames(frames)
        h, _ = self.request({"op": "observe", "shape": list(frames.shape), "dtype": "uint8",
                             "actions": _rows(actions), "poses": _rows(poses)}, frames.tobytes())
        return h

    def step(self, actions, poses=None, scene: int | None = None) -> Block:
        """actions: [B, A] rows, one per frame of the block -> the generated block."""
        header = {"op": "step", "actions": _rows(actions)}
        if poses is not None:
            header["poses"] = _rows(poses)
        if scene is not None:
            header["scene"] = scene
        h, parts = self.request(header)
        return Block(_decode_frames(h, parts), np.asarray(h["poses"], np.float32), h["first_frame"],
                     h["timings"], h["revisit"], h)

    def memory(self) -> dict:
        h, _ = self.request({"op": "memory"})
        return h

    def decode_memory(self, slot: int) -> np.ndarray:
        """The memory's own view of a slot: [B, H, W, 3] uint8, last frame = the slot's frame."""
        h, parts = self.request({"op": "decode_memory", "slot": slot})
        return _decode_frames(h, parts)

    def heartbeat(self) -> dict:
        """Liveness without a model call: {"alive": true, "sessions": n} and, once reset, "session"
        (raises ServerError no_session / evicted when the session is gone)."""
        h, _ = self.request({"op": "heartbeat"})
        return h

    def close(self) -> bool:
        """End the session (the server frees its memory). True if there was one."""
        if self.token is None:
            return False
        h, _ = self.request({"op": "close"})  # the token is kept: later requests hear "it was closed"
        return h["closed"]


def _rows(a):
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


def _frames(frames) -> np.ndarray:
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [n, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def _decode_frames(header: dict, parts: list[bytes]) -> np.ndarray:
    if len(parts) != 1 or header.get("dtype") != "uint8":
        raise ValueError(f"reply has no uint8 frames part (parts: {len(parts)}, dtype: {header.get('dtype')})")
    return np.frombuffer(parts[0], dtype=np.uint8).reshape(header["shape"])
