"""Malformed requests, each with the error code the server must answer (tests and `bench soak`).

Shapes are those of the `tiny` preset: blocks of 3 frames of 24 x 32.
"""

import json
import random

import numpy as np

from runtime import protocol as P

B, H, W = 3, 24, 32
FRAME = H * W * 3
STILL = [[0, 0, 0, 0]] * B


def _j(obj) -> bytes:
    return json.dumps(obj).encode()


def _frames_msg(op, shape, nbytes):
    return [_j({"op": op, "shape": shape, "dtype": "uint8", "actions": [[0, 0, 0, 0]] * shape[0]}), bytes(nbytes)]


def malformed(rng: random.Random, limit: int) -> tuple[list[bytes], str | None]:
    """One malformed request (parts) and the error code it must get (None: any error code)."""
    kind = rng.randrange(24)
    valid_json = _j({"op": "step", "actions": STILL})
    if kind == 0:  # random bytes
        return [rng.randbytes(rng.randrange(0, 300))], P.BAD_REQUEST
    if kind == 1:  # truncated JSON
        return [valid_json[: rng.randrange(1, len(valid_json) - 1)]], P.BAD_REQUEST
    if kind == 2:  # JSON that is not an object
        return [_j(rng.choice([[], [1, 2], 3, "step", None, 1.5, True]))], P.BAD_REQUEST
    if kind == 3:  # op missing or not a string
        return [_j({"op": rng.choice([None, 1, [], {}, True])} if rng.random() < 0.8 else {"id": 1})], P.BAD_REQUEST
    if kind == 4:  # unknown op
        return [_j({"op": "".join(rng.choices("abcdefghijklmnop_", k=rng.randrange(1, 30))) + "!"})], P.UNKNOWN_OP
    if kind == 5:  # actions of the wrong type
        return [_j({"op": "step", "actions": rng.choice(["left", 3, {"turn": 1}, [1, 2, 3], [None] * 3, True])})], None
    if kind == 6:  # NaN / infinite actions (JSON extensions a careless client may emit)
        tok = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400])  # last: no float
        row = rng.randrange(B)
        rows = ",".join(f"[{tok if r == row else 0}, 0, 0, 0]" for r in range(B))
        return [f'{{"op": "step", "actions": [{rows}]}}'.encode()], P.BAD_VALUE
    if kind == 7:  # actions out of range
        a = np.zeros((B, 4))
        a[rng.randrange(B), rng.randrange(4)] = rng.choice([-1, 1]) * rng.uniform(30, 1e6)
        return [_j({"op": "step", "actions": a.tolist()})], P.BAD_VALUE
    if kind == 8:  # wrong number of rows / columns
        rows, cols = rng.choice([(0, 4), (1, 4), (2, 4), (4, 4), (9, 4), (3, 3), (3, 5), (3, 0)])
        return [_j({"op": "step", "actions": [[0.0] * cols for _ in range(rows)]})], P.BAD_SHAPE
    if kind == 9:  # wrong poses
        poses = rng.choice([[[0] * 5] * 2, [[0] * 4] * 3, "here", [[float("nan")] * 5] * 3, [[0, 0, 0, "a", 0]] * 3])
        return [json.dumps({"op": "step", "actions": STILL, "poses": poses}).encode()], None
    if kind == 10:  # bools and strings where numbers go
        return [_j({"op": "step", "actions": [[True, 0, 0, 0]] * B})], P.BAD_VALUE
    if kind == 11:  # bad reset fields
        field, value = rng.choice([("seed", "x"), ("seed", -5), ("seed", 1.5), ("capacity", 0), ("capacity", 10 ** 9),
                                   ("capacity", "big"), ("strategy", "forget-all"), ("strategy", 7), ("scene", 999),
                                   ("scene", "e1m1"), ("revisit", "yes"), ("memory_bytes", 1), ("attention_budget", -1),
                                   ("attention_budget", True)])
        return [_j({"op": "reset", field: value})], P.BAD_VALUE
    if kind == 12:  # bad decode_memory slots
        return [_j({"op": "decode_memory", "slot": rng.choice([-1, 10 ** 6, "0", 1.5, None, [0]])})], P.BAD_VALUE
    if kind == 13:  # frames truncated or padded
        n = B * rng.randrange(1, 3)
        delta = rng.choice([-1, 1, -FRAME, FRAME, -rng.randrange(1, FRAME)])
        return _frames_msg("observe", [n, H, W, 3], n * FRAME + delta), P.BAD_SHAPE
    if kind == 14:  # frames of the wrong shape
        shape = rng.choice([[3, W, H, 3], [3, H, W, 4], [3, H, W], [4, H, W, 3], [0, H, W, 3], [-3, H, W, 3],
                            [3, H, W, "3"], "3x24x32"])
        return [_j({"op": "observe", "shape": shape, "dtype": "uint8", "actions": STILL}), bytes(3 * FRAME)], P.BAD_SHAPE
    if kind == 15:  # huge payload, above the soft limit (a reply) but below the hard one (a disconnect)
        return [_j({"op": "observe", "shape": [3, H, W, 3], "dtype": "uint8", "actions": STILL}),
                bytes(limit + rng.randrange(1, limit))], P.TOO_LARGE
    if kind == 16:  # huge header
        return [_j({"op": "info", "pad": "x" * (P.MAX_HEADER_BYTES + rng.randrange(1, 1000))})], P.TOO_LARGE
    if kind == 17:  # wrong dtype / missing description / payload where none belongs
        return rng.choice([
            ([_j({"op": "observe", "shape": [3, H, W, 3], "dtype": "float32", "actions": STILL}), bytes(3 * FRAME)],
             P.BAD_VALUE),
            ([_j({"op": "observe", "actions": STILL}), bytes(3 * FRAME)], P.BAD_VALUE),
            ([_j({"op": "observe", "shape": [3, H, W, 3], "dtype": "uint8", "actions": STILL})], P.BAD_REQUEST),
            ([_j({"op": rng.choice(["step", "info", "memory", "close"]), "actions": STILL}), b"xx"], P.BAD_REQUEST),
        ])
    if kind == 18:  # too many parts
        return [valid_json] + [b"x"] * rng.randrange(2, 6), P.BAD_REQUEST
    if kind == 19:  # observe without actions, or with the wrong number of them
        n = rng.choice([0, 2, 6])
        return [_j({"op": "observe", "shape": [3, H, W, 3], "dtype": "uint8", "actions": [[0] * 4] * n}),
                bytes(3 * FRAME)], None
    if kind == 20:  # wrong protocol version
        return [_j({"op": "info", "protocol": rng.choice([0, 1, 3, "2", 1.5, None, True])})], P.UNSUPPORTED_VERSION
    if kind == 21:  # bad ids
        return [_j({"op": "info", "id": rng.choice([{"a": 1}, [1], 1.5, "x" * 200, 2 ** 70, True])})], P.BAD_VALUE
    if kind == 22:  # reset start-frame fields without frames, scene on a bad step
        return rng.choice([([_j({"op": "reset", "actions": STILL})], P.BAD_REQUEST),
                           ([_j({"op": "step", "actions": STILL, "scene": 64})], P.BAD_VALUE)])
    # deeply nested JSON
    depth = rng.randrange(5000, 30000)
    return [b'{"op": "step", "actions": ' + b"[" * depth + b"]" * depth + b"}"], None
