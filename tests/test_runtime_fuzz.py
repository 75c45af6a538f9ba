"""10,000+ malformed messages at a real server: every one gets an error reply, the server stays up,
and a session that received its share of them is exactly where it would be without them."""

import json
import random

import pytest
import zmq

from runtime import protocol as P
from runtime.fuzz import _j, malformed
from runtime_helpers import ServerProcess, tiny_checkpoint

MESSAGES = 10_000
B = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tiny_checkpoint(tmp_path_factory.mktemp("tiny")))
    yield srv
    srv.kill()


def rpc(sock, parts):
    sock.send_multipart(parts)
    assert sock.poll(20_000), "no reply within 20 s"
    reply = sock.recv_multipart()
    return json.loads(reply[0]), reply[1:]


def test_fuzz(server):
    ctx = zmq.Context.instance()
    victim = ctx.socket(zmq.DEALER)  # a session that receives its share of garbage
    victim.setsockopt(zmq.ROUTING_ID, b"victim")
    strangers = ctx.socket(zmq.DEALER)  # no session at all
    reference = ctx.socket(zmq.DEALER)  # the same session, never fuzzed
    for s in (victim, strangers, reference):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(server.endpoint)
    limit = rpc(strangers, [_j({"op": "info"})])[0]["limits"]["max_message_bytes"]

    tokens = {}
    for s in (victim, reference):
        head = rpc(s, [_j({"op": "reset", "seed": 11})])[0]
        assert head["status"] == "ok"
        tokens[s] = head["token"]

    def step(s):
        return [_j({"op": "step", "token": tokens[s], "actions": [[4.0, 1.0, 2.0, -1.0]] * B})]

    for s in (victim, reference):
        assert rpc(s, step(s))[0]["status"] == "ok"

    rng = random.Random(1234)
    codes = {}
    for i in range(MESSAGES):
        parts, want = malformed(rng, limit)
        sent_id = None
        if rng.random() < 0.5:  # with an id, which the reply must echo
            try:
                head = json.loads(parts[0])
                if isinstance(head, dict) and "id" not in head:
                    head["id"] = sent_id = i
                    parts = [json.dumps(head).encode()] + parts[1:]
            except (ValueError, RecursionError):
                pass
        sock = victim if i % 2 else strangers
        if sock is victim:  # the victim's garbage carries its token, so it reaches its session
            try:
                head = json.loads(parts[0])
                if isinstance(head, dict) and head.get("op") not in ("reset", None):
                    head["token"] = tokens[victim]
                    parts = [json.dumps(head).encode()] + parts[1:]
            except (ValueError, RecursionError, UnicodeDecodeError):
                pass
        reply, payload = rpc(sock, parts)
        assert reply["status"] == "error", (parts[0][:200], reply)
        code = reply["error"]["code"]
        assert code in P.ERROR_CODES and reply["error"]["message"], reply
        if want is not None and not (sock is strangers and code == P.NO_TOKEN):
            assert code == want, (parts[0][:200], reply)
        assert payload == []
        if sent_id is not None and len(parts[0]) <= P.MAX_HEADER_BYTES:
            assert reply["id"] == sent_id, reply
        codes[code] = codes.get(code, 0) + 1

    assert server.alive()
    assert sum(codes.values()) == MESSAGES and len(codes) >= 7, codes  # many different checks were reached
    # The fuzzed session is exactly where a never-fuzzed one is.
    (hv, fv), (hr, fr) = rpc(victim, step(victim)), rpc(reference, step(reference))
    assert hv["status"] == hr["status"] == "ok" and hv["first_frame"] == hr["first_frame"] == 3
    assert fv == fr
    mv, mr = (rpc(s, [_j({"op": "memory", "token": tokens[s]})])[0] for s in (victim, reference))
    for key in ("used", "next_frame", "slots", "evictions", "bytes_held"):
        assert mv[key] == mr[key], key
    for s in (victim, strangers, reference):
        s.close()


def test_a_part_above_the_hard_limit_drops_only_that_connection(server):
    ctx = zmq.Context.instance()
    rude = ctx.socket(zmq.DEALER)
    polite = ctx.socket(zmq.DEALER)
    for s in (rude, polite):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(server.endpoint)
    limit = rpc(polite, [_j({"op": "info"})])[0]["limits"]["max_message_bytes"]
    rude.send_multipart([_j({"op": "info"}), bytes(4 * limit + 1)])
    assert not rude.poll(500)  # libzmq dropped the connection instead of buffering the part
    assert rpc(polite, [_j({"op": "info"})])[0]["status"] == "ok"
    rude.close()
    polite.close()
