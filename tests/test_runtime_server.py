"""A real `magworld serve` process and real ZeroMQ sockets on loopback (tiny model, CPU)."""

import json
import signal
import time

import numpy as np
import pytest
import zmq

from runtime.client import Client, ServerError, ServerUnavailable
from runtime_helpers import ServerProcess, pan_actions, tiny_checkpoint, wait_for


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(checkpoint):
    srv = ServerProcess(checkpoint, "--pub", "tcp://127.0.0.1:*", "--max-sessions", "6")
    yield srv
    srv.kill()


def client(srv, **kw):
    return Client(srv.endpoint, timeout_s=kw.pop("timeout_s", 30), **kw)


def test_info_describes_the_model_and_protocol(server):
    with client(server) as c:
        info = c.info()
    assert info.protocol == 2 and info.block_size == 3 and info.frame_shape == (24, 32, 3)
    assert [a["name"] for a in info.actions] == ["turn", "look", "forward", "strafe"]
    assert all(a["low"] < 0 < a["high"] for a in info.actions)
    assert info.memory["strategy"] == "mag" and info.memory["capacity"] == 24
    assert info.raw["limits"]["max_sessions"] == 6


def mem_bytes(c, slots):
    return slots * c.info().memory["bytes_per_slot"]


def test_a_whole_session(server):
    with client(server) as c:
        c.reset(seed=1)
        block = c.step(pan_actions(3, 11.25))
        assert block.frames.shape == (3, 24, 32, 3) and block.frames.dtype == np.uint8
        assert block.first_frame == 0 and block.poses[:, 3].tolist() == [11.25, 22.5, 33.75]
        assert set(block.timings) >= {"model_ms"} and block.revisit is None
        second = c.step(pan_actions(3, 11.25))
        # What the HUD compares: each mag slot stands for a block; the oldest slot is frame 2.
        assert second.header["memory"] == {"used": 2, "capacity": 24, "bytes_held": mem_bytes(c, 2),
                                           "frames_per_slot": 3.0, "oldest_frame": 2}
        mem = c.memory()
        assert mem["frames_per_slot"] == 3.0
        assert mem["used"] == 2 and mem["capacity"] == 24 and mem["next_frame"] == 6  # mag: one slot per block
        assert mem["bytes_held"] == 2 * mem["bytes_per_slot"] and mem["full_cache_bytes"] == 6 * mem["bytes_per_slot"]
        slot = mem["slots"][-1]
        assert slot["frame"] == 5 and slot["pose"][3] == pytest.approx(67.5)
        view = c.decode_memory(slot["slot"])
        assert view.shape == (3, 24, 32, 3) and view.dtype == np.uint8
        with pytest.raises(ServerError) as e:
            c.decode_memory(20)
        assert e.value.code == "bad_value"
        assert c.close() is True
        with pytest.raises(ServerError) as e:
            c.step(pan_actions(3, 0))
        assert e.value.code == "no_session"


def test_the_clients_docstring_example_runs_and_observes_real_frames_first(server):
    import runtime.client

    doc = runtime.client.__doc__
    example = doc[doc.index("    from game.truth"):doc.index("Observe first")]
    names = {}
    exec("\n".join(line[4:] for line in example.splitlines()).replace("tcp://127.0.0.1:5555", server.endpoint), names)
    block, start = names["block"], names["start"]
    assert start.frames.dtype == np.uint8 and start.frames.std() > 10  # engine frames, not blank ones
    assert block.first_frame == len(start.frames) and block.frames.shape == (3, 24, 32, 3)


def test_engine_frames_go_into_memory(server):
    """reset with start frames and observe write real frames as if generated; the poses given are kept."""
    frames = np.random.default_rng(0).integers(0, 255, (6, 24, 32, 3), dtype=np.uint8)
    poses = np.array([[i * 10.0, 0, 0, 90, 0] for i in range(6)], np.float32)
    with client(server) as c:
        reply = c.reset(seed=2, frames=frames[:3], actions=np.zeros((3, 4)), poses=poses[:3])
        assert reply["next_frame"] == 3 and reply["pose"][0] == 20
        c.observe(frames[3:], np.zeros((3, 4)), poses[3:])
        mem = c.memory()
        assert [s["frame"] for s in mem["slots"]] == [2, 5]
        assert [s["pose"][0] for s in mem["slots"]] == [20, 50]
        block = c.step(np.zeros((3, 4)))  # no pose given: integrated on from the engine's last pose
        assert block.first_frame == 6 and block.poses[0].tolist() == [50, 0, 0, 90, 0]
        with pytest.raises(ServerError) as e:
            c.observe(frames[:4], np.zeros((4, 4)))
        assert e.value.code == "bad_shape"
        c.close()


def test_two_clients_have_independent_memories(server):
    """Interleaving two sessions changes nothing in either: each equals a session run alone."""
    turn = pan_actions(3, 15.0)
    with client(server) as a, client(server) as b:
        a.reset(seed=3)
        b.reset(seed=9, strategy="full", capacity=12)
        a_frames = []
        for i in range(4):
            a_frames.append(a.step(turn).frames)
            b.step(pan_actions(3, -7.5))
        assert a.memory()["used"] == 4 and b.memory()["used"] == 12  # full keeps every frame, to capacity
        assert b.memory()["strategy"] == "full"
        with client(server) as alone:
            alone.reset(seed=3)
            for i in range(4):
                assert np.array_equal(alone.step(turn).frames, a_frames[i])
            alone.close()
        a.close()
        b.close()


def test_a_client_that_vanishes_mid_step_does_not_hurt_the_others(server):
    ctx = zmq.Context.instance()
    with client(server) as steady, client(server) as reference:
        steady.reset(seed=4)
        reference.reset(seed=4)
        for _ in range(3):
            ghost = ctx.socket(zmq.DEALER)
            ghost.connect(server.endpoint)
            ghost.send_multipart([json.dumps({"op": "reset"}).encode()])
            ghost.send_multipart([json.dumps({"op": "step", "token": "0" * 32, "actions": [[1, 0, 0, 0]] * 3}).encode()])
            ghost.close(linger=0)  # gone before any reply
            got = steady.step(pan_actions(3, 5.0)).frames
            assert np.array_equal(got, reference.step(pan_actions(3, 5.0)).frames)
        assert server.alive()
        steady.close()
        reference.close()


def test_spectators_receive_every_block_on_the_pub_stream(server):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect(server.pub_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)  # PUB/SUB: a subscriber sees only what is published after it joined
    with client(server) as c:
        sid = c.reset(seed=5)["session"]
        block = c.step(pan_actions(3, 3.0))
        c.close()
    assert sub.poll(5000)
    topic, head, frames = sub.recv_multipart()
    head = json.loads(head)
    assert topic == sid.encode() and head["first_frame"] == 0 and head["shape"] == [3, 24, 32, 3]
    assert frames == block.frames.tobytes()
    sub.close(linger=0)


def test_lazy_pirate_retry_does_not_skip_a_block(server):
    """A reply lost on the way: the client times out, reconnects with its routing id and resends;
    the server answers from the stored reply, so the session advances by exactly one block."""
    with client(server, timeout_s=30) as c:
        c.reset(seed=6)
        c.step(pan_actions(3, 1.0))
        header = {"op": "step", "actions": pan_actions(3, 1.0).tolist(), "id": "same", "token": c.token}
        for _ in range(2):  # the same request twice, as a retry sends it
            c.sock.send_multipart([json.dumps(header).encode()])
            head = json.loads(c.sock.recv_multipart()[0])
            assert head["first_frame"] == 3
        c.close_socket()
        c._connect()  # a new socket: the session (found by its token) is still there
        assert c.step(pan_actions(3, 1.0)).first_frame == 6
        c.close()


def test_limits_busy_and_idle_timeout(checkpoint):
    srv = ServerProcess(checkpoint, "--max-sessions", "2", "--idle-timeout", "1", "--evict-after", "600")
    try:
        a, b, c = client(srv), client(srv), client(srv)
        a.reset()
        b.reset()
        with pytest.raises(ServerError) as e:
            c.reset()
        assert e.value.code == "busy"
        assert wait_for(lambda: "expired" in srv.log(), timeout=10)
        c.reset()  # the idle sessions were dropped, so there is room again
        with pytest.raises(ServerError) as e:
            a.step(pan_actions(3, 0))
        assert e.value.code == "no_session"
        for x in (a, b, c):
            x.close_socket()
    finally:
        srv.kill()


def test_unreachable_server_raises_after_the_retries():
    with Client("tcp://127.0.0.1:9", timeout_s=0.2, retries=1) as c:
        with pytest.raises(ServerUnavailable):
            c.info()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly_even_mid_step(checkpoint, sig):
    srv = ServerProcess(checkpoint)
    try:
        with client(srv) as c:
            c.reset(seed=1)
            c.step(pan_actions(3, 1.0))
            c.sock.send_multipart([json.dumps({"op": "step", "token": c.token, "actions": [[1, 0, 0, 0]] * 3}).encode()])
            srv.proc.send_signal(sig)
            assert srv.proc.wait(20) == 0
            c.close_socket()
        assert wait_for(lambda: "shut down" in srv.log(), timeout=5), srv.log()
    finally:
        srv.kill()


def test_remote_bind_needs_curve_or_insecure(checkpoint, tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "worldmodel.cli", "serve", "--checkpoint", str(checkpoint),
                          "--bind", "tcp://0.0.0.0:*"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--insecure" in out.stderr and "--curve-secret-key" in out.stderr


@pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq was built without CURVE")
def test_curve_encrypted_server_with_an_allow_list(checkpoint, tmp_path):
    import zmq.auth

    (tmp_path / "allowed").mkdir()
    _, server_secret = zmq.auth.create_certificates(tmp_path, "server")
    alice_public_file, alice_secret_file = zmq.auth.create_certificates(tmp_path / "allowed", "alice")
    server_public, _ = zmq.auth.load_certificate(server_secret)
    alice = zmq.auth.load_certificate(alice_secret_file)
    srv = ServerProcess(checkpoint, "--curve-secret-key", str(server_secret),
                        "--curve-clients", str(tmp_path / "allowed"))
    try:
        with Client(srv.endpoint, timeout_s=20, curve_server_key=server_public, curve_client_keys=alice) as c:
            assert c.info().protocol == 2
        strangers = [Client(srv.endpoint, timeout_s=0.5, retries=0, curve_server_key=server_public),  # not listed
                     Client(srv.endpoint, timeout_s=0.5, retries=0)]  # no encryption at all
        for stranger in strangers:
            with pytest.raises(ServerUnavailable):
                stranger.info()
            stranger.close_socket()
    finally:
        srv.kill()


def test_a_send_that_cannot_go_out_is_a_failed_try_not_a_hang():
    # A REQ socket with no peer to queue to (its connection torn down, as after a refused CURVE
    # handshake) blocks on send; the client bounds that as it bounds the wait for a reply. Here the
    # socket may only send to peers whose connection is complete (IMMEDIATE) and nothing listens.
    import time

    import zmq

    c = Client("tcp://127.0.0.1:9", timeout_s=0.3, retries=1)
    connect = c._connect

    def immediate():
        connect()
        c.sock.setsockopt(zmq.IMMEDIATE, 1)
        c.sock.disconnect("tcp://127.0.0.1:9")
        c.sock.connect("tcp://127.0.0.1:9")

    c._connect = immediate
    immediate()
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="after 2 tries"):
        c.info()
    assert time.monotonic() - start < 5
    c.close_socket()
