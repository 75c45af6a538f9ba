"""Protocol v2 on the wire: parsing and validating requests, building replies (docs/protocol.md).

A message is a ZeroMQ multipart message: part 0 is a UTF-8 JSON object (the header), any further
part is a raw binary payload that the header describes with `shape` and `dtype`. Everything here
is a pure function of bytes and the model's shapes, so it can be fuzzed without a server.

Every check raises ProtocolError(code, message); the server turns it into an error reply.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from worldmodel.actions import ACTION_DIM, ACTION_HIGH, ACTION_LOW, ACTION_NAMES, POSE_DIM

PROTOCOL_VERSION = 2  # v2: sessions follow the `token` that `reset` returns, not the routing id

# Limits. The message limit is per server (it depends on the frame size); these bound the rest.
MAX_HEADER_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_PARTS = 2  # the header and at most one binary payload
TOKEN_CHARS = 32  # a session token: 128 random bits as hex
DEFAULT_MAX_OBSERVE_BLOCKS = 16

# Error codes (docs/protocol.md lists when each is used).
BAD_REQUEST = "bad_request"  # not a multipart message of a JSON object header, wrong number of parts
UNKNOWN_OP = "unknown_op"
BAD_VALUE = "bad_value"  # a field has the wrong type, is missing, non-finite or out of range
BAD_SHAPE = "bad_shape"  # a payload or array does not have the shape the model needs
NO_SESSION = "no_session"  # the op needs a session and this client has none (send `reset`)
TOO_LARGE = "too_large"  # the message exceeds the server's size limit
BUSY = "busy"  # the server already holds its maximum number of sessions, none of them idle
NO_TOKEN = "no_token"  # the op needs a session and the request carries no `token` (info, heartbeat, reset do not)
EVICTED = "evicted"  # this token's session was evicted (idle) to make room for a new client
UNSUPPORTED_VERSION = "unsupported_version"
INTERNAL = "internal"  # the model failed; the session is as it was before the request
ERROR_CODES = (BAD_REQUEST, UNKNOWN_OP, BAD_VALUE, BAD_SHAPE, NO_SESSION, NO_TOKEN, EVICTED, TOO_LARGE, BUSY,
               UNSUPPORTED_VERSION, INTERNAL)

OPS = ("info", "heartbeat", "reset", "observe", "step", "memory", "decode_memory", "close")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ModelShape:
    """What the server's model accepts: frames [H, W, 3] uint8 in blocks of `block_size`."""

    block_size: int
    height: int
    width: int
    num_scenes: int = 0
    strategies: tuple[str, ...] = ("mag",)
    max_capacity: int = 64
    bytes_per_slot: int = 1
    max_observe_blocks: int = DEFAULT_MAX_OBSERVE_BLOCKS

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * 3

    def default_max_message_bytes(self) -> int:
        """Room for the largest legal message: `max_observe_blocks` blocks of frames plus a header."""
        return self.max_observe_blocks * self.block_size * self.frame_bytes + MAX_HEADER_BYTES


@dataclass
class Request:
    op: str
    id: object = None  # str, int or None; echoed in the reply
    token: str | None = None  # the session token `reset` returned, if the request carries one
    header: dict = field(default_factory=dict)
    payloads: list = field(default_factory=list)  # binary parts after the header


# ---------------------------------------------------------------------- envelope


def parse_request(parts: list[bytes], max_message_bytes: int) -> Request:
    """Header + payloads -> Request. The size is checked before anything is parsed."""
    total = sum(len(p) for p in parts)
    if total > max_message_bytes:
        raise ProtocolError(TOO_LARGE, f"message of {total} bytes exceeds the limit of {max_message_bytes} bytes")
    if not parts:
        raise ProtocolError(BAD_REQUEST, "empty message: expected a JSON header part")
    if len(parts) > MAX_PARTS:
        raise ProtocolError(BAD_REQUEST, f"message has {len(parts)} parts; at most {MAX_PARTS} (header, one payload)")
    raw = parts[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(TOO_LARGE, f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(BAD_REQUEST, f"header is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_REQUEST, f"header must be a JSON object, got {type(header).__name__}")
    rid = header.get("id")
    if rid is not None and not (isinstance(rid, str) and len(rid) <= MAX_ID_CHARS
                                or isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**63):
        header.pop("id", None)
        raise ProtocolError(BAD_VALUE, f"id must be a string of at most {MAX_ID_CHARS} characters or an integer")
    version = header.get("protocol", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(UNSUPPORTED_VERSION, f"this server speaks protocol {PROTOCOL_VERSION}, request says "
                            f"{version!r} (v2: send the 'token' that 'reset' returns in every later request)")
    op = header.get("op")
    if not isinstance(op, str):
        raise ProtocolError(BAD_REQUEST, "header needs an 'op' string (one of " + ", ".join(OPS) + ")")
    if op not in OPS:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {op[:40]!r}; expected one of {', '.join(OPS)}")
    token = header.get("token")
    if token is not None and not (isinstance(token, str) and len(token) == TOKEN_CHARS):
        raise ProtocolError(BAD_VALUE, f"token must be the {TOKEN_CHARS}-character string that 'reset' returned")
    return Request(op=op, id=rid, header=header, payloads=list(parts[1:]), token=token)


def safe_id(parts: list[bytes]):
    """Best-effort request id for an error reply to a message that did not parse."""
    try:
        if parts and len(parts[0]) <= MAX_HEADER_BYTES:
            rid = json.loads(parts[0].decode("utf-8")).get("id")
            if isinstance(rid, str) and len(rid) <= MAX_ID_CHARS or isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**63:
                return rid
    except Exception:
        pass
    return None


def reply(rid, body: dict | None = None, payload: bytes | memoryview | None = None) -> list:
    header = {"status": "ok", "id": rid, **(body or {})}
    parts = [json.dumps(header, allow_nan=False).encode()]
    if payload is not None:
        parts.append(payload)
    return parts


def error_reply(rid, code: str, message: str) -> list:
    header = {"status": "error", "id": rid, "error": {"code": code, "message": message}}
    return [json.dumps(header).encode()]


# ---------------------------------------------------------------------- fields


def _no_payload(req: Request) -> None:
    if req.payloads:
        raise ProtocolError(BAD_REQUEST, f"'{req.op}' takes no binary part, got {len(req.payloads)}")


def _int(header: dict, key: str, default=None, low=None, high=None, required=False):
    v = header.get(key, default)
    if v is None:
        if required:
            raise ProtocolError(BAD_VALUE, f"'{key}' is required (an integer)")
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(BAD_VALUE, f"'{key}' must be an integer, got {type(v).__name__}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ProtocolError(BAD_VALUE, f"'{key}' must be in [{low}, {high}], got {v}")
    return v


def _bool(header: dict, key: str, default: bool) -> bool:
    v = header.get(key, default)
    if not isinstance(v, bool):
        raise ProtocolError(BAD_VALUE, f"'{key}' must be true or false, got {type(v).__name__}")
    return v


def _matrix(value, rows: int, cols: int, name: str, what: str) -> np.ndarray:
    """A JSON list of `rows` rows of `cols` finite numbers -> float32 [rows, cols]."""
    if not isinstance(value, list):
        raise ProtocolError(BAD_VALUE, f"'{name}' must be a list of {rows} rows of {cols} numbers ({what})")
    if len(value) != rows:
        raise ProtocolError(BAD_SHAPE, f"'{name}' needs {rows} rows (one per frame), got {len(value)}")
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise ProtocolError(BAD_SHAPE, f"'{name}' row {i} must be a list of {cols} numbers ({what})")
        for x in row:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ProtocolError(BAD_VALUE, f"'{name}' row {i} holds a {type(x).__name__}; numbers only")
            # abs() first: an integer above ~1e308 has no float, and math.isfinite would overflow
            if abs(x) > 1e30 or not math.isfinite(x):
                raise ProtocolError(BAD_VALUE, f"'{name}' row {i} holds a non-finite or absurd value {x!r}")
    return np.asarray(value, dtype=np.float32).reshape(rows, cols)


def parse_actions(value, rows: int) -> np.ndarray:
    """`actions`: one row per frame, in frame order, each (turn, look, forward, strafe) in range."""
    a = _matrix(value, rows, ACTION_DIM, "actions", "(" + ", ".join(ACTION_NAMES) + ")")
    bad = (a < ACTION_LOW) | (a > ACTION_HIGH)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise ProtocolError(
            BAD_VALUE,
            f"actions row {i}: {ACTION_NAMES[j]} = {a[i, j]:g} is outside [{ACTION_LOW[j]:g}, {ACTION_HIGH[j]:g}]",
        )
    return a


def parse_poses(value, rows: int) -> np.ndarray | None:
    """`poses` (optional): one (x, y, z, angle, pitch) row per frame, or null."""
    if value is None:
        return None
    return _matrix(value, rows, POSE_DIM, "poses", "x, y, z, angle, pitch")


def parse_frames(req: Request, shape: ModelShape) -> np.ndarray | None:
    """The binary part, if any: RGB uint8 frames [n, H, W, 3] with n a whole number of blocks."""
    if not req.payloads:
        if "shape" in req.header or "dtype" in req.header:
            raise ProtocolError(BAD_REQUEST, "header describes frames (shape/dtype) but no binary part follows")
        return None
    desc = req.header.get("shape")
    if req.header.get("dtype") != "uint8":
        raise ProtocolError(BAD_VALUE, f"frames must have dtype 'uint8', header says {req.header.get('dtype')!r}")
    if not (isinstance(desc, list) and len(desc) == 4
            and all(isinstance(d, int) and not isinstance(d, bool) for d in desc)):
        raise ProtocolError(BAD_SHAPE, "header 'shape' must be [frames, height, width, 3] (integers)")
    n, h, w, c = desc
    if (h, w, c) != (shape.height, shape.width, 3):
        raise ProtocolError(BAD_SHAPE, f"frames must be [n, {shape.height}, {shape.width}, 3], header says {desc}")
    if n <= 0 or n % shape.block_size:
        raise ProtocolError(BAD_SHAPE, f"frame count must be a positive multiple of the block size {shape.block_size}, got {n}")
    if n > shape.max_observe_blocks * shape.block_size:
        raise ProtocolError(
            TOO_LARGE, f"at most {shape.max_observe_blocks} blocks ({shape.max_observe_blocks * shape.block_size} frames) per request, got {n}"
        )
    data = req.payloads[0]
    if len(data) != n * shape.frame_bytes:
        raise ProtocolError(BAD_SHAPE, f"payload has {len(data)} bytes; shape {desc} needs {n * shape.frame_bytes}")
    return np.frombuffer(data, dtype=np.uint8).reshape(n, h, w, 3)


def _scene(header: dict, shape: ModelShape):
    if shape.num_scenes == 0:
        if header.get("scene") is not None:
            raise ProtocolError(BAD_VALUE, "this model has no scene table; send scene null")
        return None
    return _int(header, "scene", None, -1, shape.num_scenes - 1)


# ---------------------------------------------------------------------- ops


@dataclass
class ResetArgs:
    seed: int
    scene: int | None
    strategy: str | None
    capacity: int | None
    attention_budget: int | None
    revisit: bool
    revisit_decode: bool
    retrieval: bool  # False: attend to the newest slots only (an ablation; `mag` only)
    frames: np.ndarray | None
    actions: np.ndarray | None
    poses: np.ndarray | None


def parse_reset(req: Request, shape: ModelShape) -> ResetArgs:
    h = req.header
    strategy = h.get("strategy")
    if strategy is not None and (not isinstance(strategy, str) or strategy not in shape.strategies):
        raise ProtocolError(BAD_VALUE, f"strategy must be one of {list(shape.strategies)}, got {strategy!r}"[:300])
    capacity = _int(h, "capacity", None, 1, shape.max_capacity)
    memory_bytes = _int(h, "memory_bytes", None, 1, None)
    if memory_bytes is not None:
        slots = memory_bytes // shape.bytes_per_slot
        if capacity is not None:
            raise ProtocolError(BAD_VALUE, "give 'capacity' (slots) or 'memory_bytes', not both")
        if not 1 <= slots <= shape.max_capacity:
            raise ProtocolError(
                BAD_VALUE, f"memory_bytes {memory_bytes} is {slots} slots of {shape.bytes_per_slot} bytes; "
                f"allowed 1..{shape.max_capacity} slots"
            )
        capacity = slots
    budget = _int(h, "attention_budget", None, 1, shape.max_capacity)
    if budget is not None and capacity is not None and budget > capacity:
        raise ProtocolError(BAD_VALUE, f"attention_budget {budget} exceeds capacity {capacity}")
    frames = parse_frames(req, shape)
    n = 0 if frames is None else len(frames)
    actions = poses = None
    if frames is not None:
        actions = (parse_actions(h["actions"], n) if h.get("actions") is not None
                   else np.zeros((n, ACTION_DIM), np.float32))
        poses = parse_poses(h.get("poses"), n)
    elif h.get("actions") is not None or h.get("poses") is not None:
        raise ProtocolError(BAD_REQUEST, "reset: 'actions'/'poses' describe start frames, but no frames were sent")
    return ResetArgs(
        seed=_int(h, "seed", 0, 0, 2**63 - 1), scene=_scene(h, shape), strategy=strategy, capacity=capacity,
        attention_budget=budget, revisit=_bool(h, "revisit", True), revisit_decode=_bool(h, "revisit_decode", True),
        retrieval=_bool(h, "retrieval", True), frames=frames, actions=actions, poses=poses,
    )


def parse_observe(req: Request, shape: ModelShape):
    """-> frames [n, H, W, 3] uint8, actions [n, A], poses [n, P] or None."""
    frames = parse_frames(req, shape)
    if frames is None:
        raise ProtocolError(BAD_REQUEST, "observe needs a binary part of frames [n, H, W, 3] uint8")
    if req.header.get("actions") is None:
        raise ProtocolError(BAD_VALUE, "observe needs 'actions': one row per frame (the actions that led to them)")
    n = len(frames)
    return frames, parse_actions(req.header["actions"], n), parse_poses(req.header.get("poses"), n)


def parse_step(req: Request, shape: ModelShape):
    """-> actions [B, A], poses [B, P] or None, scene override (int, -1 = empty) or None."""
    _no_payload(req)
    if req.header.get("actions") is None:
        raise ProtocolError(BAD_VALUE, f"step needs 'actions': {shape.block_size} rows, one per frame of the block")
    b = shape.block_size
    return parse_actions(req.header["actions"], b), parse_poses(req.header.get("poses"), b), _scene(req.header, shape)


def parse_decode_memory(req: Request, shape: ModelShape) -> int:
    _no_payload(req)
    return _int(req.header, "slot", None, 0, shape.max_capacity - 1, required=True)


def parse_plain(req: Request) -> None:
    """info, heartbeat, memory, close: no fields beyond op/id/token."""
    _no_payload(req)
