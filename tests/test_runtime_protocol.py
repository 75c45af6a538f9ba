"""Protocol v1 parsing, the pose tracker, the revisit check and the session table, in process."""

import json
import math

import numpy as np
import pytest

from runtime import protocol as P
from runtime.pose_tracker import PoseTracker
from runtime.revisit import RevisitChecker, angle_difference
from runtime.sessions import SessionTable

SHAPE = P.ModelShape(block_size=3, height=24, width=32, num_scenes=4, strategies=("full", "mag", "none", "window"),
                     max_capacity=24, bytes_per_slot=1000, max_observe_blocks=4)
LIMIT = SHAPE.default_max_message_bytes()


def req(header, *payloads):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return P.parse_request([raw, *payloads], LIMIT)


def code_of(fn, *args):
    with pytest.raises(P.ProtocolError) as e:
        fn(*args)
    return e.value.code


STILL = [[0, 0, 0, 0]] * 3


# ---------------------------------------------------------------------- envelope


@pytest.mark.parametrize("raw, code", [
    (b"not json", P.BAD_REQUEST),
    (b"\xff\xfe", P.BAD_REQUEST),
    (b"[1, 2]", P.BAD_REQUEST),
    (b"{}", P.BAD_REQUEST),
    (b'{"op": 3}', P.BAD_REQUEST),
    (b'{"op": "fly"}', P.UNKNOWN_OP),
    (b'{"op": "info", "protocol": 1}', P.UNSUPPORTED_VERSION),
    (b'{"op": "info", "id": {"a": 1}}', P.BAD_VALUE),
    (b"[" * 60000, P.BAD_REQUEST),  # nesting deeper than the JSON parser recurses
])
def test_malformed_headers_get_their_error_code(raw, code):
    assert code_of(P.parse_request, [raw], LIMIT) == code


def test_size_is_checked_before_parsing():
    assert code_of(P.parse_request, [b"garbage", b"x" * LIMIT], LIMIT) == P.TOO_LARGE
    assert code_of(P.parse_request, [b" " * (P.MAX_HEADER_BYTES + 1) + b"{}"], LIMIT) == P.TOO_LARGE


def test_error_reply_echoes_the_id_when_it_can():
    assert P.safe_id([b'{"op": "fly", "id": "a7"}']) == "a7"
    assert P.safe_id([b'{"id": 3, "op": ']) is None
    head = json.loads(P.error_reply("a7", P.UNKNOWN_OP, "no")[0])
    assert head == {"status": "error", "id": "a7", "error": {"code": "unknown_op", "message": "no"}}


# ---------------------------------------------------------------------- step


def test_step_takes_one_action_row_per_frame_in_order():
    actions, poses, scene = P.parse_step(req({"op": "step", "actions": [[1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]]}), SHAPE)
    assert actions.dtype == np.float32 and actions.shape == (3, 4)
    assert actions[:, 0].tolist() == [1, 2, 3]
    assert poses is None and scene is None


@pytest.mark.parametrize("actions, code", [
    (None, P.BAD_VALUE),
    ("left", P.BAD_VALUE),
    ([[0, 0, 0, 0]] * 2, P.BAD_SHAPE),
    ([[0, 0, 0]] * 3, P.BAD_SHAPE),
    ([[0, 0, 0, "a"]] * 3, P.BAD_VALUE),
    ([[0, 0, 0, True]] * 3, P.BAD_VALUE),
    ([[0, 0, 0, None]] * 3, P.BAD_VALUE),
    ([[30, 0, 0, 0]] * 3, P.BAD_VALUE),  # turn beyond 22.5 deg/frame
    ([[0, 0, -25.5, 0]] * 3, P.BAD_VALUE),
])
def test_bad_actions_are_refused(actions, code):
    assert code_of(P.parse_step, req({"op": "step", "actions": actions}), SHAPE) == code


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_actions_are_refused(token):
    raw = ('{"op": "step", "actions": [[%s, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]}' % token).encode()
    assert code_of(P.parse_step, req(raw), SHAPE) == P.BAD_VALUE


def test_step_poses_and_scene_are_checked():
    assert code_of(P.parse_step, req({"op": "step", "actions": STILL, "poses": [[0] * 5] * 2}), SHAPE) == P.BAD_SHAPE
    assert code_of(P.parse_step, req({"op": "step", "actions": STILL, "scene": 4}), SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_step, req({"op": "step", "actions": STILL}, b"x"), SHAPE) == P.BAD_REQUEST
    _, poses, scene = P.parse_step(req({"op": "step", "actions": STILL, "poses": [[1, 2, 3, 4, 5]] * 3, "scene": -1}), SHAPE)
    assert poses.shape == (3, 5) and scene == -1


# ---------------------------------------------------------------------- frames


def frames_req(op, n, payload_bytes=None, shape=None, **extra):
    shape = shape or [n, 24, 32, 3]
    size = n * SHAPE.frame_bytes if payload_bytes is None else payload_bytes
    return req({"op": op, "shape": shape, "dtype": "uint8", "actions": [[0, 0, 0, 0]] * n, **extra}, bytes(size))


def test_observe_reads_whole_blocks_of_frames():
    frames, actions, poses = P.parse_observe(frames_req("observe", 6), SHAPE)
    assert frames.shape == (6, 24, 32, 3) and frames.dtype == np.uint8
    assert actions.shape == (6, 4) and poses is None


@pytest.mark.parametrize("n, payload, shape, code", [
    (4, None, None, P.BAD_SHAPE),  # not a whole number of blocks
    (3, 3 * 24 * 32 * 3 - 1, None, P.BAD_SHAPE),  # truncated payload
    (3, 3 * 24 * 32 * 3 + 1, None, P.BAD_SHAPE),
    (3, None, [3, 32, 24, 3], P.BAD_SHAPE),  # transposed frames
    (3, None, [3, 24, 32], P.BAD_SHAPE),
    (15, None, None, P.TOO_LARGE),  # more blocks than max_observe_blocks
])
def test_bad_frame_payloads_are_refused(n, payload, shape, code):
    assert code_of(P.parse_observe, frames_req("observe", n, payload, shape), SHAPE) == code


def test_frames_must_be_uint8_and_present():
    r = req({"op": "observe", "shape": [3, 24, 32, 3], "dtype": "float32", "actions": STILL}, bytes(3 * 2304))
    assert code_of(P.parse_observe, r, SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_observe, req({"op": "observe", "actions": STILL}), SHAPE) == P.BAD_REQUEST


# ---------------------------------------------------------------------- reset


def test_reset_memory_budget_in_bytes_becomes_slots():
    args = P.parse_reset(req({"op": "reset", "memory_bytes": 10_500, "strategy": "full"}), SHAPE)
    assert args.capacity == 10 and args.strategy == "full"
    assert code_of(P.parse_reset, req({"op": "reset", "memory_bytes": 10 ** 9}), SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_reset, req({"op": "reset", "capacity": 25}), SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_reset, req({"op": "reset", "capacity": 4, "attention_budget": 5}), SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_reset, req({"op": "reset", "strategy": "memorize-everything"}), SHAPE) == P.BAD_VALUE
    assert code_of(P.parse_reset, req({"op": "reset", "seed": -1}), SHAPE) == P.BAD_VALUE


def test_reset_may_start_from_client_frames():
    args = P.parse_reset(frames_req("reset", 3, seed=2), SHAPE)
    assert args.frames.shape == (3, 24, 32, 3) and args.actions.shape == (3, 4) and args.seed == 2


# ---------------------------------------------------------------------- pose tracker


def test_pose_tracker_follows_doom_conventions():
    t = PoseTracker()
    poses = t.advance(np.array([[22.5, 0, 0, 0]] * 4, np.float32))  # turn left 90 degrees
    assert poses[-1, 3] == pytest.approx(90.0)
    t.advance(np.array([[0, 0, 10, 0]], np.float32))  # forward along 90 degrees: +y
    assert t.pose[:2] == pytest.approx([0, 10], abs=1e-9)
    t.advance(np.array([[0, 0, 0, 10]], np.float32))  # strafe right at 90 degrees: angle 0, +x
    assert t.pose[:2] == pytest.approx([10, 10], abs=1e-9)
    t.advance(np.array([[-22.5, 5, 0, 0]] * 8, np.float32))  # 180 degrees right, pitch clipped
    assert t.pose[3] == pytest.approx(270.0) and t.pose[4] == pytest.approx(40.0)


def test_pose_tracker_takes_the_engine_pose_when_given():
    t = PoseTracker()
    given = np.array([[1, 2, 3, 45, 0], [4, 5, 6, 50, 1]], np.float32)
    assert np.array_equal(t.advance(np.zeros((2, 4), np.float32), given), given)
    t.advance(np.array([[0, 0, 1, 0]], np.float32))
    assert t.pose[0] == pytest.approx(4 + math.cos(math.radians(50)))


# ---------------------------------------------------------------------- revisit


def test_revisit_is_reported_once_after_the_camera_left_and_came_back():
    chk = RevisitChecker(decode=True)
    frame = np.full((24, 32, 3), 100, np.uint8)
    slots = [{"slot": 0, "frame": 2, "pose": [0, 0, 0, 10, 0]}]
    chk.record(0, np.stack([frame] * 3), slots)
    here, away = np.array([0, 0, 0, 12, 0.0]), np.array([0, 0, 0, 120, 0.0])
    decoded = lambda slot: np.stack([frame] * 3)  # noqa: E731
    assert chk.check(here, frame, 5, slots, decoded) is None  # never left
    assert chk.check(away, frame, 8, slots, decoded) is None
    report = chk.check(here, frame, 11, slots, decoded)
    assert report["slot"] == 0 and report["frames_away"] == 9 and report["angle_difference"] == pytest.approx(2)
    assert report["vs_remembered_frame"] == {"psnr": None, "ssim": 1.0}  # identical: infinite PSNR
    assert report["vs_memory_decoded"]["ssim"] == 1.0
    assert chk.check(here, frame, 14, slots, decoded) is None  # staying is not a new revisit


def test_revisit_keeps_only_frames_memory_holds():
    chk = RevisitChecker()
    frames = np.zeros((3, 24, 32, 3), np.uint8)
    chk.record(0, frames, [{"slot": 0, "frame": 2, "pose": [0] * 5}])
    chk.record(3, frames, [{"slot": 0, "frame": 5, "pose": [0] * 5}])  # slot 0 overwritten
    assert sorted(chk.frames) == [5]
    assert angle_difference(350, 10) == pytest.approx(20)


# ---------------------------------------------------------------------- sessions


def test_session_table_bounds_eviction_and_expiry():
    table = SessionTable(max_sessions=2, idle_timeout_s=10, evict_after_s=5)
    kw = dict(engine=None, tracker=None, revisit=None, scene=None, strategy="mag", attention_budget=4)
    a, b = table.open(**kw), table.open(**kw)
    assert a.token != b.token and len(a.token) == P.TOKEN_CHARS
    with pytest.raises(P.ProtocolError) as e:
        table.make_room(now=a.last_stepped + 1)  # both stepped within evict_after_s
    assert e.value.code == P.BUSY
    a2 = table.replace(a, **kw)  # a reset replaces, it does not count twice
    assert a2.token == a.token and a2.sid != a.sid and len(table) == 2
    b.last_stepped -= 1  # b stepped longer ago than a2: b goes first
    assert table.make_room(now=b.last_stepped + 6) is b and len(table) == 1
    with pytest.raises(P.ProtocolError) as e:
        table.require(b.token)
    assert e.value.code == P.EVICTED
    gone = table.expire(now=a2.last_seen + 11)
    assert gone == [a2] and len(table) == 0
    with pytest.raises(P.ProtocolError) as e:
        table.require(a2.token)
    assert e.value.code == P.NO_SESSION and "expired" in e.value.message
