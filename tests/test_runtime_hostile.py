"""The runtime under hostile or unlucky clients (issue 14): one regression test per finding."""

import json
import random
import re
import threading
import time

import numpy as np
import pytest
import torch
import zmq

from runtime import protocol as P
from runtime import server as server_module
from runtime import zmtp
from runtime.backends.torch_backend import TorchBackend
from runtime.bench_soak import rss_bytes
from runtime.client import Client, ServerError
from runtime.raw_zmtp import RawPeer
from runtime.server import Server, ServerOptions, is_loopback, session_limit
from runtime_helpers import ServerProcess, pan_actions, tiny_checkpoint, wait_for
from test_runtime_dispatch import TOKENS, Outbox, call, with_token
from worldmodel.bundle import WorldModel
from worldmodel.config import MemoryConfig, preset
from worldmodel.memory import KVMemoryError, make_strategy

STEP = {"op": "step", "actions": [[7.5, 0, 3, 0]] * 3}


@pytest.fixture(scope="module")
def model():
    return WorldModel.random(preset("tiny"))


@pytest.fixture(scope="module")
def backend(model):
    return TorchBackend(None, model=model)


def new_server(backend, **kw):
    srv = Server(backend, ServerOptions(**kw), log=open("/dev/null", "w"))
    srv.router = Outbox()
    return srv


# ---------------------------------------------------------------- 1. batching and capacities


@pytest.mark.parametrize("strategy", ["mag", "full", "window"])
def test_the_capacity_rule_is_what_the_eviction_code_can_run(model, strategy):
    """min_capacity slots run a long session; one slot fewer fails within a few blocks."""
    cfg = model.config
    need = make_strategy(MemoryConfig(strategy, 24, cfg.memory.window_frames, cfg.memory.sink_frames, 1),
                         cfg.model.block_frames).min_capacity()
    a = torch.zeros(1, 3, 4)
    for capacity, works in ((need, True), (need - 1, False)):
        roll = model.rollout(strategy, capacity=capacity, attention_budget=1)
        failed = False
        for _ in range(need + 3):
            try:
                roll.generate(a)
            except (KVMemoryError, ValueError):
                failed = True
                break
        assert failed != works, (strategy, capacity)


def test_capacities_that_cannot_work_are_refused_at_reset(backend):
    srv = new_server(backend)
    for strategy, capacity in (("mag", 1), ("full", 3), ("full", 5)):
        head, _ = call(srv, b"x", {"op": "reset", "strategy": strategy, "capacity": capacity})
        assert head["error"]["code"] == P.BAD_VALUE and "at least" in head["error"]["message"]
    assert call(srv, b"x", {"op": "reset", "strategy": "full", "capacity": 6})[0]["status"] == "ok"
    assert call(srv, b"x", {"op": "reset", "strategy": "mag", "capacity": 2})[0]["status"] == "ok"


def test_a_failed_write_in_a_batch_leaves_every_other_session_as_it_was(backend, monkeypatch):
    """One session's memory write fails inside a batched pass (as `mag` with one slot did): the
    other session's blocks stay exactly those of a clean run, block after block."""
    together, alone = new_server(backend), new_server(backend)
    for srv in (together, alone):
        call(srv, b"good", {"op": "reset", "seed": 3})
    call(together, b"bad", {"op": "reset", "seed": 5})
    bad = together.sessions.get(TOKENS[(id(together), b"bad")]).engine.rollout.strategy

    def no_room(memory, frames):
        raise KVMemoryError("no room")

    monkeypatch.setattr(bad, "choose_slots", no_room)
    for block in range(4):
        together._serve_messages([[c, json.dumps(with_token(together, c, {**STEP, "id": block})).encode()]
                                  for c in (b"good", b"bad")])  # good first: written before bad fails
        assert together.router.sent[b"bad"][-1][0]["error"]["code"] == P.INTERNAL
        head, frames = together.router.sent[b"good"][-1]
        want, want_frames = call(alone, b"good", {**STEP, "id": block})
        assert head["first_frame"] == want["first_frame"] and head["memory"] == want["memory"]
        assert np.abs(np.frombuffer(frames[0], np.uint8).astype(int)
                      - np.frombuffer(want_frames[0], np.uint8).astype(int)).max() <= 1


# ---------------------------------------------------------------- 2. bounded memory


def test_replies_to_a_client_that_does_not_read_are_dropped_and_counted(tmp_path):
    srv = ServerProcess(tiny_checkpoint(tmp_path / "tiny"), "--queue-bytes", "200000")
    ctx = zmq.Context.instance()
    deaf = ctx.socket(zmq.DEALER)
    deaf.setsockopt(zmq.RCVHWM, 1)
    deaf.setsockopt(zmq.RCVBUF, 4096)
    deaf.setsockopt(zmq.LINGER, 0)
    deaf.connect(srv.endpoint)
    try:
        with Client(srv.endpoint, timeout_s=30) as c:
            assert c.info().raw["limits"]["queued_replies"] == 2  # 200,000 bytes of replies of ~79 KB at most
            for _ in range(20_000):
                deaf.send_multipart([b'{"op": "info"}'])
            assert wait_for(lambda: c.info().raw["stats"]["replies_dropped"]["not_reading"] > 0, timeout=60)
            assert srv.alive()
    finally:
        deaf.close()
        srv.kill()


def test_every_part_and_every_message_is_capped_by_the_hard_limit(backend):
    srv = Server(backend, ServerOptions(bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*"),
                 log=open("/dev/null", "w"), context=zmq.Context())
    srv.bind()
    try:
        assert srv.hard_message_bytes == 4 * srv.max_message_bytes
        for sock, endpoint, guard in zip((srv.router, srv.pub), (srv.endpoint, srv.pub_endpoint), srv.guards):
            assert sock.getsockopt(zmq.MAXMSGSIZE) == srv.hard_message_bytes  # one part
            # all parts of a message: the tcp endpoint is the guard's, the socket's own is ipc
            assert guard.endpoint == endpoint and sock.getsockopt(zmq.LAST_ENDPOINT).startswith(b"ipc://")
            assert (guard.max_message_bytes, guard.max_parts) == (srv.hard_message_bytes, srv.opts.max_message_parts)
        assert len(srv.guards) == 2
        # requests queued per connection: queue_bytes of them (at least two messages)
        assert srv.router.getsockopt(zmq.RCVHWM) == max(2, srv.opts.queue_bytes // srv.max_message_bytes)
        assert srv.router.getsockopt(zmq.SNDHWM) == max(2, srv.opts.queue_bytes // srv.max_reply_bytes)
    finally:
        srv.close()


def test_a_curve_server_binds_without_the_guard(backend, tmp_path):
    """The guard cannot read CURVE's encrypted frames: the ROUTER itself is the endpoint, and the
    log says who can still send an unfinished message (docs/protocol.md, Limits)."""
    import zmq.auth

    if not zmq.has("curve"):
        pytest.skip("this libzmq was built without CURVE")
    _, secret = zmq.auth.create_certificates(tmp_path, "server")
    log = tmp_path / "log"
    srv = Server(backend, ServerOptions(bind="tcp://127.0.0.1:*", curve_secret_key=secret), log=open(log, "w"),
                 context=zmq.Context())
    srv.bind()
    try:
        assert srv.guards == [] and srv.router.getsockopt(zmq.LAST_ENDPOINT).decode() == srv.endpoint
        assert "no input guard" in log.read_text() and "server's public key" in log.read_text()
    finally:
        srv.close()


# ---------------------------------------------------------------- 2b. unfinished multipart messages


def zmtp_stream(*frames: bytes) -> bytes:
    """What a DEALER sends after connecting: greeting, READY, then `frames` (whole frames)."""
    return zmtp.greeting() + zmtp.command(b"READY", {"Socket-Type": b"DEALER"}) + b"".join(frames)


def frame(size: int, more: bool = False) -> bytes:
    return zmtp.frame_header(size, more=more) + bytes(size)


def first_break(stream: bytes, limit: int, parts: int, rng: random.Random) -> int | None:
    """Feed `stream` to a FrameReader in random chunks; -> how many bytes it took before it broke."""
    reader, i = zmtp.FrameReader(limit, parts), 0
    while i < len(stream):
        n = rng.randrange(1, 300)
        if reader.feed(stream[i:i + n]) is not None:  # broke inside this chunk: find the byte
            reader, k = zmtp.FrameReader(limit, parts), 0
            while reader.feed(stream[k:k + 1]) is None:
                k += 1
            return k
        i += n
    return None


def test_the_frame_reader_refuses_the_header_that_crosses_a_limit():
    """A message may hold `limit` bytes of bodies in at most `parts` parts; the frame that would
    cross either is refused at its header, before any of its body; commands and finished
    messages do not add up; only ZMTP 3 is read."""
    rng = random.Random(0)
    limit, parts = 1000, 4
    full = [frame(300, more=True), frame(300, more=True), frame(400)]  # exactly the limit, 3 parts
    assert first_break(zmtp_stream(*full * 50), limit, parts, rng) is None
    pings = [zmtp.command(b"PING", {}) for _ in range(200)]  # heartbeats between messages: no message
    assert first_break(zmtp_stream(*pings, *full, *pings), limit, parts, rng) is None
    assert first_break(zmtp_stream(*[frame(0, more=True)] * 3, frame(0)), limit, parts, rng) is None
    head = zmtp_stream(*full, frame(300, more=True), frame(300, more=True))  # a second message, 600 bytes
    long_part = zmtp.frame_header(401)  # 1001 bytes in all: the long (9-byte) header is refused
    assert first_break(head + long_part + bytes(401), limit, parts, rng) == len(head) + len(long_part) - 1
    head = zmtp_stream(*[frame(1, more=True)] * parts)
    assert first_break(head + frame(1), limit, parts, rng) == len(head) + 1  # the fifth part's 2-byte header
    big = zmtp.command(b"X" * 10, {"k": bytes(limit)})
    assert first_break(zmtp_stream(big), limit, parts, rng) == len(zmtp_stream()) + 8  # a command too large
    zmtp2 = bytearray(zmtp.greeting())
    zmtp2[10] = 1
    for not3 in (bytes(zmtp2), b"\x01\x00" + bytes(62), b"GET / HTTP/1.1\r\n"):
        assert zmtp.FrameReader(limit, parts).feed(not3) is not None


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    srv = ServerProcess(tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
    yield srv
    srv.kill()


def rpc(sock, parts, timeout_ms=20_000):
    """Send `parts` on a DEALER socket -> the reply's parts, or None when none came."""
    sock.send_multipart(parts)
    return sock.recv_multipart() if sock.poll(timeout_ms) else None


def test_an_endless_multipart_message_is_dropped_at_the_hard_limit(guarded):
    """Raw ZMTP peers send 200 MB in parts with MORE set, never a last part. Each connection is
    closed once its message would pass the hard limit, the server's RSS stays put, and a client
    that steps all along is served as usual."""
    with Client(guarded.endpoint, timeout_s=30) as c:
        info = c.info().raw
    hard = 4 * info["limits"]["max_message_bytes"]
    dropped_before = info["stats"]["connections_dropped"]
    rss0 = rss_bytes(guarded.proc.pid)
    done, peak, honest = threading.Event(), [rss0], {"steps": 0, "errors": []}

    def watch_rss():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(guarded.proc.pid))
            time.sleep(0.01)

    def step_along():
        with Client(guarded.endpoint, timeout_s=10, retries=0) as c:
            c.reset(seed=3, revisit=False)
            while not done.is_set():
                try:
                    c.step(pan_actions(3, 5.625))
                    honest["steps"] += 1
                except Exception as e:  # ServerUnavailable, ServerError: the attack got through
                    honest["errors"].append(repr(e))

    threads = [threading.Thread(target=f) for f in (watch_rss, step_along)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        steps_before, total, per_connection = honest["steps"], 200 * 2**20, []
        while sum(per_connection) < total:
            with RawPeer(guarded.endpoint) as peer:
                peer.send_multipart([b'{"op": "info", "id": 1}'])  # a complete request is served first
                assert json.loads(peer.recv_multipart()[0])["status"] == "ok"
                per_connection.append(peer.send_endless_message(64 * 2**20))  # or until closed
        steps_during = honest["steps"] - steps_before
    finally:
        done.set()
        for t in threads:
            t.join()
    growth = peak[0] - rss0
    print(f"{sum(per_connection) / 2**20:.0f} MiB sent on {len(per_connection)} connections (at most "
          f"{max(per_connection) / 2**20:.1f} MiB each, kernel buffers included); hard limit {hard} bytes; "
          f"server RSS {rss0 / 2**20:.1f} MiB, peak +{growth / 2**20:.1f} MiB; {steps_during} honest steps meanwhile")
    assert growth < 50 * 2**20
    assert len(per_connection) >= 10 and max(per_connection) < 32 * 2**20  # every connection was closed early
    # The guard logs what libzmq held of the message when it closed the connection: never more
    # than the hard limit, and the part it refused would have crossed it.
    closes = re.findall(r"\((\d+) bytes in \d+ parts so far, then a part of (\d+)\)", guarded.log())
    assert len(closes) >= len(per_connection)
    assert all(int(held) <= hard < int(held) + int(part) for held, part in closes)
    assert honest["errors"] == [] and steps_during >= 5
    with Client(guarded.endpoint, timeout_s=30) as c:
        stats = c.info().raw["stats"]
    assert stats["connections_dropped"] - dropped_before == len(per_connection)
    assert guarded.alive()


def test_requests_of_one_and_two_parts_pass_the_guard_whole(guarded):
    """DEALER and REQ requests of 1 or 2 parts are served through the guard; across parts a
    message up to the hard limit gets its error reply and one byte more closes only its own
    connection; so do more parts than --max-message-parts."""
    ctx = zmq.Context.instance()
    dealer, req = ctx.socket(zmq.DEALER), ctx.socket(zmq.REQ)
    for s in (dealer, req):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(guarded.endpoint)
    try:
        info = json.loads(rpc(dealer, [b'{"op": "info"}'])[0])
        limit, max_parts = info["limits"]["max_message_bytes"], info["limits"]["max_message_parts"]
        req.send_multipart([b'{"op": "info"}'])  # a REQ socket adds an empty delimiter part
        assert req.poll(20_000) and json.loads(req.recv_multipart()[0])["status"] == "ok"
        frames = np.random.default_rng(0).integers(0, 256, (3, 24, 32, 3), np.uint8)
        head = {"op": "reset", "shape": [3, 24, 32, 3], "dtype": "uint8", "actions": [[0, 0, 0, 0]] * 3}
        req.send_multipart([json.dumps(head).encode(), frames.tobytes()])  # 3 frames on the wire
        assert req.poll(20_000)
        token = json.loads(req.recv_multipart()[0])["token"]
        observe = {**head, "op": "observe", "token": token}
        reply = json.loads(rpc(dealer, [json.dumps(observe).encode(), frames.tobytes()])[0])
        assert reply["status"] == "ok" and reply["next_frame"] == 6
        with Client(guarded.endpoint, timeout_s=30) as c:
            c.reset(seed=1, frames=frames)  # the Python client: 2 parts, and a step's 2-part reply
            assert c.step(pan_actions(3, 5.625)).frames.shape == (3, 24, 32, 3)
        with RawPeer(guarded.endpoint) as peer:  # and the raw peer's own two parts
            peer.send_multipart([b'{"op": "info", "id": 2}', b"x"])
            assert json.loads(peer.recv_multipart()[0])["error"]["code"] == P.BAD_REQUEST  # a payload for info
        header = b'{"op": "info"}'
        # Four parts, each well below the hard limit (what ZMQ_MAXMSGSIZE checks), all together exactly it.
        split = [header, bytes(limit), bytes(2 * limit), bytes(limit - len(header))]
        assert json.loads(rpc(dealer, split)[0])["error"]["code"] == P.TOO_LARGE
        assert json.loads(rpc(dealer, [header] + [b""] * (max_parts - 1))[0])["error"]["code"] == P.BAD_REQUEST
        for rude_parts in (split[:-1] + [split[-1] + b"x"], [header] + [b""] * max_parts):
            rude = ctx.socket(zmq.DEALER)
            rude.setsockopt(zmq.LINGER, 0)
            rude.connect(guarded.endpoint)
            assert rpc(rude, rude_parts, timeout_ms=1000) is None  # its connection was closed unanswered
            rude.close()
            assert json.loads(rpc(dealer, [b'{"op": "info"}'])[0])["status"] == "ok"  # the others' stay
    finally:
        dealer.close()
        req.close()


# ---------------------------------------------------------------- 3. session slots


def test_a_new_client_evicts_the_least_recently_stepped_idle_session(backend):
    srv = new_server(backend, max_sessions=2, evict_after_s=0.3)
    call(srv, b"a", {"op": "reset"})
    call(srv, b"b", {"op": "reset"})
    assert call(srv, b"c", {"op": "reset"})[0]["error"]["code"] == P.BUSY  # both stepped just now
    time.sleep(0.35)
    call(srv, b"b", STEP)  # b steps; a only asks cheap questions, which do not keep it
    call(srv, b"a", {"op": "memory"})
    assert call(srv, b"c", {"op": "reset"})[0]["status"] == "ok"
    head, _ = call(srv, b"a", STEP)
    assert head["error"]["code"] == P.EVICTED and "reset" in head["error"]["message"]
    assert call(srv, b"b", STEP)[0]["status"] == "ok"
    assert srv.info()["stats"]["sessions_evicted"] == 1


def test_the_session_limit_follows_the_device_memory(backend, monkeypatch):
    counts = []
    for free in (2**26, 2**27):
        monkeypatch.setattr(server_module, "_free_memory", lambda device, free=free: free)
        counts.append(session_limit(backend, "cpu", 24))
    assert counts[1] in (2 * counts[0], 2 * counts[0] + 1) and counts[0] >= 1
    monkeypatch.setattr(server_module, "_free_memory", lambda device: 2**40)
    assert session_limit(backend, "cpu", 24) == server_module.MAX_SESSIONS_CAP


# ---------------------------------------------------------------- 4. the session token


def test_a_routing_id_gives_no_access_only_the_token_does(backend):
    srv = new_server(backend)
    head, _ = call(srv, b"victim", {"op": "reset", "seed": 1})
    token = head["token"]
    assert len(token) == P.TOKEN_CHARS and token not in srv.log_file.name
    call(srv, b"victim", STEP)
    for op in ("memory", "step", "decode_memory", "close", "observe"):  # the victim's routing id, no token
        out = srv.handle(b"victim", [json.dumps({**STEP, "op": op, "slot": 0}).encode()])
        assert json.loads(out[0])["error"]["code"] == P.NO_TOKEN
    guess = srv.handle(b"victim", [json.dumps({"op": "memory", "token": "f" * 32}).encode()])
    assert json.loads(guess[0])["error"]["code"] == P.NO_SESSION
    assert call(srv, b"victim", {"op": "memory"})[0]["next_frame"] == 3  # untouched
    bad = srv.handle(b"x", [json.dumps({"op": "memory", "token": 7}).encode()])
    assert json.loads(bad[0])["error"]["code"] == P.BAD_VALUE


# ---------------------------------------------------------------- 5. validation gaps


@pytest.mark.parametrize("field", ["actions", "poses"])
def test_integers_beyond_a_float_are_bad_values(backend, field):
    srv = new_server(backend)
    call(srv, b"a", {"op": "reset"})
    rows = [[0, 0, 0, 0, 0][: 4 if field == "actions" else 5] for _ in range(3)]
    rows[1][0] = 10 ** 400
    header = {**STEP, field: rows}
    head, _ = call(srv, b"a", header)
    assert head["error"]["code"] == P.BAD_VALUE


def test_info_advertises_memorypack_only_when_the_model_can_serve_it(backend):
    srv = new_server(backend)
    assert "memorypack" not in srv.info()["memory"]["strategies"]
    assert call(srv, b"a", {"op": "reset", "strategy": "memorypack"})[0]["error"]["code"] == P.BAD_VALUE
    packed = TorchBackend(None, model=WorldModel.random(preset("tiny"), semantic_pack=True))
    assert "memorypack" in new_server(packed).info()["memory"]["strategies"]


def test_the_loopback_check_resolves_the_address():
    assert is_loopback("tcp://127.0.0.1:1") and is_loopback("tcp://localhost:1") and is_loopback("tcp://[::1]:1")
    for ep in ("tcp://127.attacker.example:1", "tcp://127.0.0.1.nip.io.invalid:1", "tcp://*:1", "tcp://eth0:1",
               "tcp://0.0.0.0:1", "udp://127.0.0.1:1"):
        assert not is_loopback(ep), ep


# ---------------------------------------------------------------- 8. failure behaviour


def test_heartbeat_and_a_server_restart(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    srv = ServerProcess(ckpt, bind=f"tcp://127.0.0.1:{port}")
    try:
        with Client(srv.endpoint, timeout_s=5, retries=6) as c:
            assert c.heartbeat()["alive"] is True and "session" not in c.heartbeat()
            sid = c.reset(seed=1)["session"]
            assert c.heartbeat()["session"] == sid
            c.step(pan_actions(3, 1.0))
            srv.kill()
            srv = ServerProcess(ckpt, bind=f"tcp://127.0.0.1:{port}")
            with pytest.raises(ServerError) as e:  # the sessions died with the old process
                c.step(pan_actions(3, 1.0))
            assert e.value.code == P.NO_SESSION
            c.reset(seed=1)  # a reset with the stale token opens a new session
            assert c.step(pan_actions(3, 1.0)).first_frame == 0
    finally:
        srv.kill()


# ---------------------------------------------------------------- issue 12.4: retrieval, attention budget


def test_reset_switches_retrieval_and_sets_the_attention_budget(backend, model):
    srv = new_server(backend)
    head, _ = call(srv, b"a", {"op": "reset", "capacity": 8, "attention_budget": 2, "retrieval": False, "seed": 2})
    assert head["retrieval"] is False and head["attention_budget"] == 2
    mem = call(srv, b"a", {"op": "memory"})[0]
    assert mem["retrieval"] is False and mem["attention_budget"] == 2
    assert call(srv, b"b", {"op": "reset", "strategy": "full", "capacity": 12, "retrieval": False})[0]["error"][
        "code"] == P.BAD_VALUE
    assert call(srv, b"b", {"op": "reset", "retrieval": "no"})[0]["error"]["code"] == P.BAD_VALUE
    # The switch is the eval's "mag (recent only)": a rollout with retrieval off makes the same frames.
    roll = model.rollout("mag", capacity=8, attention_budget=2)
    roll.retrieval = False
    gen = torch.Generator().manual_seed(2)
    turn = [[11.25, 0, 5, 0]] * 3
    for i in range(5):
        poses = [[0, 0, 0, (90 * i) % 360, 0]] * 3
        head, frames = call(srv, b"a", {"op": "step", "actions": turn, "poses": poses})
        x0 = roll.generate(torch.tensor([turn]), None, torch.tensor([poses], dtype=torch.float32), generator=gen)
        want = model.decode(x0)[0].cpu().numpy()
        assert np.abs(np.frombuffer(frames[0], np.uint8).reshape(want.shape).astype(int) - want).max() <= 1
