"""The server's dispatch (Server.handle) in process: retries, model failures, session isolation."""

import json

import numpy as np
import pytest

from runtime import protocol as P
from runtime.backends.torch_backend import TorchBackend
from runtime.server import Server, ServerOptions, is_loopback
from worldmodel.bundle import WorldModel


@pytest.fixture(scope="module")
def backend():
    from worldmodel.config import preset

    return TorchBackend(None, model=WorldModel.random(preset("tiny")))


@pytest.fixture
def server(backend):
    return Server(backend, ServerOptions(), log=open("/dev/null", "w"))


TOKENS: dict = {}  # (server, client) -> the token its reset returned


def with_token(server, identity, header: dict) -> dict:
    """The header as a client sends it: with its session's token once it has one."""
    token = TOKENS.get((id(server), identity))
    return header if token is None or header["op"] == "info" else {**header, "token": token}


def call(server, identity, header, *payloads):
    out = server.handle(identity, [json.dumps(with_token(server, identity, header)).encode(), *payloads])
    head = json.loads(out[0])
    if header["op"] == "reset" and head["status"] == "ok":
        TOKENS[(id(server), identity)] = head["token"]
    return head, out[1:]


STEP = {"op": "step", "actions": [[7.5, 0, 3, 0]] * 3}


def test_a_retried_request_is_answered_not_run_twice(server):
    call(server, b"a", {"op": "reset", "seed": 1})
    first, frames1 = call(server, b"a", {**STEP, "id": "r1"})
    again, frames2 = call(server, b"a", {**STEP, "id": "r1"})  # the client did not see the reply and resent
    assert again == first and frames2 == frames1
    nxt, _ = call(server, b"a", {**STEP, "id": "r2"})
    assert nxt["first_frame"] == first["first_frame"] + 3  # only one block was generated for r1


class Boom(RuntimeError):
    pass


def test_model_failure_is_an_internal_error_and_leaves_the_session_as_it_was(server, monkeypatch):
    call(server, b"a", {"op": "reset", "seed": 4})
    call(server, b"b", {"op": "reset", "seed": 4})
    call(server, b"a", STEP)
    call(server, b"b", STEP)
    session = server.sessions.get(TOKENS[(id(server), b"a")])
    before = session.engine.memory_state(), session.tracker.pose.copy()

    denoise = session.engine.rollout.generator.forward

    def fail_midway(*args, **kwargs):  # fails inside the denoising loop, after work has begun
        raise Boom("device lost")

    monkeypatch.setattr(session.engine.rollout.generator, "forward", fail_midway)
    head, parts = call(server, b"a", {**STEP, "id": 9})
    assert head["status"] == "error" and head["id"] == 9 and head["error"]["code"] == P.INTERNAL
    assert "device lost" in head["error"]["message"] and parts == []
    monkeypatch.setattr(session.engine.rollout.generator, "forward", denoise)

    after = session.engine.memory_state(), session.tracker.pose
    assert after[0] == before[0] and np.array_equal(after[1], before[1])
    # The failed request changed nothing: a and b, fed the same, still produce the same block.
    (ha, fa), (hb, fb) = call(server, b"a", STEP), call(server, b"b", STEP)
    assert ha["first_frame"] == hb["first_frame"] == 3 and fa == fb


def test_every_op_needs_the_session_except_info_reset_close(server):
    for op in ("observe", "step", "memory", "decode_memory"):
        head, _ = call(server, b"nobody", {"op": op, "actions": [[0, 0, 0, 0]] * 3, "slot": 0})
        assert head["error"]["code"] in (P.NO_TOKEN, P.BAD_REQUEST, P.BAD_VALUE)
    head, _ = call(server, b"nobody", {"op": "step", "actions": [[0, 0, 0, 0]] * 3})
    assert head["error"]["code"] == P.NO_TOKEN
    head, _ = call(server, b"nobody", {"op": "step", "token": "0" * 32, "actions": [[0, 0, 0, 0]] * 3})
    assert head["error"]["code"] == P.NO_SESSION
    assert call(server, b"nobody", {"op": "info"})[0]["status"] == "ok"
    assert call(server, b"nobody", {"op": "close", "token": "0" * 32})[0] == {"status": "ok", "id": None,
                                                                              "closed": False}


def test_a_failed_reset_keeps_the_old_session(server):
    call(server, b"a", {"op": "reset", "seed": 1})
    call(server, b"a", STEP)
    head, _ = call(server, b"a", {"op": "reset", "strategy": "window", "capacity": 4})  # window needs sinks+window
    assert head["error"]["code"] == P.BAD_VALUE and "at least" in head["error"]["message"]
    assert call(server, b"a", {"op": "memory"})[0]["next_frame"] == 3


def test_only_loopback_binds_are_open_by_default():
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://localhost:1") and is_loopback("ipc:///tmp/x")
    assert is_loopback("tcp://[::1]:5555")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://*:5555")
    assert not is_loopback("tcp://192.168.1.4:5555")
    assert not is_loopback("tcp://127.attacker.example:1")  # a name, resolved: it is not 127.x


class Outbox:
    """Stands in for the ROUTER socket: keeps what the server sends, by client."""

    def __init__(self):
        self.sent = {}

    def send_multipart(self, parts, flags=0):
        self.sent.setdefault(parts[0], []).append((json.loads(parts[1]), parts[2:]))

    def getsockopt(self, opt):
        return 0


def test_steps_that_arrive_together_run_as_one_batch_and_match_steps_alone(backend):
    """Three clients' steps taken off the socket together make one batched pass; each client
    gets the frames it gets when stepping alone (same seed), and a malformed step or a second
    request of the same client in that batch is answered on its own, in order."""
    together = Server(backend, ServerOptions(), log=open("/dev/null", "w"))
    alone = Server(backend, ServerOptions(), log=open("/dev/null", "w"))
    together.router = Outbox()
    clients = [b"a", b"b", b"c"]
    for i, c in enumerate(clients):
        for srv in (together, alone):
            call(srv, c, {"op": "reset", "seed": 10 + i})
    rng = np.random.default_rng(0)
    for block in range(3):
        steps = {c: {"op": "step", "id": f"{c.decode()}{block}",
                     "actions": np.round(rng.uniform(-1, 1, (3, 4)), 2).tolist()} for c in clients}
        msgs = [[c, json.dumps(with_token(together, c, steps[c])).encode()] for c in clients]
        msgs.insert(1, [b"a", json.dumps(with_token(together, b"a", {"op": "memory", "id": "m"})).encode()])
        msgs.append([b"d", json.dumps({"op": "step", "actions": [[float("nan")] * 4] * 3}).encode()])
        together._serve_messages(msgs)
        for c in clients:
            got = [h for h, _ in together.router.sent[c]]
            want, want_frames = call(alone, c, steps[c])
            head, frames = together.router.sent[c][-2 if c == b"a" else -1]
            assert head["status"] == "ok" and head["first_frame"] == want["first_frame"]
            a = np.frombuffer(frames[0], np.uint8).astype(int)
            b = np.frombuffer(want_frames[0], np.uint8).astype(int)
            assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
            assert got[-1]["status"] == "ok"
        # a's step ran alone (its memory request came between), b and c ran together
        assert together.router.sent[b"a"][-2][0]["timings"]["batch"] == 1
        assert together.router.sent[b"a"][-1][0]["id"] == "m"
        assert together.router.sent[b"b"][-1][0]["timings"]["batch"] == 2
        assert together.router.sent[b"d"][-1][0]["status"] == "error"
    assert together.sessions.get(TOKENS[(id(together), b"c")]).engine.next_frame == 9


def test_batching_can_be_turned_off(backend):
    srv = Server(backend, ServerOptions(batch_steps=False), log=open("/dev/null", "w"))
    srv.router = Outbox()
    for c in (b"a", b"b"):
        call(srv, c, {"op": "reset"})
    srv._serve_messages([[c, json.dumps(with_token(srv, c, STEP)).encode()] for c in (b"a", b"b")])
    assert [srv.router.sent[c][-1][0]["timings"]["batch"] for c in (b"a", b"b")] == [1, 1]
