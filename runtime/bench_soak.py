"""`magworld bench soak`: honest clients beside hostile ones, on loopback, for a bounded time.

Starts `magworld serve` (loopback only) in a child process. N honest clients each run a session
of seeded random actions and keep every block; beside them a fuzzer sends malformed requests
(runtime/fuzz.py), requests with guessed tokens, capacities that cannot work, bursts of requests
whose replies it never reads, and now and then, from a raw ZMTP peer (runtime/raw_zmtp.py), a
multipart message that never ends, whose connection the server must close. When the honest
clients are done (or the time is up) the hostile ones leave, and each honest client's actions are replayed alone on a fresh session: a
block that differs from its replay (PSNR below MATCH_PSNR) is a cross-session mismatch. Reports
messages, errors, unanswered requests, mismatches and the server's RSS at start and end.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import threading
import time

import numpy as np

MATCH_PSNR = 40.0  # dB; batching changes a block only by float rounding (> 50 dB), corruption by 24-32
REPLY_TIMEOUT_S = 30.0
ENDLESS_BYTES = 64 * 2**20  # an endless message stops here if not closed (it is after the hard limit: a few MB)


def register(sub):
    p = sub.add_parser(
        "soak",
        help="honest clients beside a fuzzer on one server: errors, unanswered, cross-session mismatches, RSS",
        description="magworld bench soak: N honest clients and hostile ones (malformed requests, guessed tokens, "
        "impossible capacities, clients that never read) against one loopback server for a bounded time; then "
        "each honest client is replayed alone and compared block by block.",
    )
    p.add_argument("--preset", default="tiny", help="model preset, random weights (default: tiny; the fuzzer's "
                   "messages are shaped for tiny)")
    p.add_argument("--clients", type=int, default=4, help="honest clients")
    p.add_argument("--blocks", type=int, default=60, help="blocks each honest client generates")
    p.add_argument("--hostile-messages", type=int, default=10_000, help="hostile requests to send (at most)")
    p.add_argument("--seconds", type=float, default=150.0, help="stop the hostile clients after this long")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the server")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.set_defaults(func=run)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _walk(seed: int, blocks: int, block: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(blocks):
        a = np.zeros((block, 4), np.float32)
        a[:, 0] = rng.choice([-11.25, 0.0, 11.25])
        a[:, 2] = rng.choice([0.0, 12.5])
        out.append(a)
    return out


def _honest(endpoint: str, seed: int, blocks: int, out: dict) -> None:
    from runtime.client import Client, ServerError

    out.update(messages=0, errors=[], frames=[])
    with Client(endpoint, timeout_s=REPLY_TIMEOUT_S) as c:
        b = c.info().block_size
        c.reset(seed=seed, revisit_decode=False)
        out["messages"] += 2
        out["actions"] = _walk(seed, blocks, b)
        for a in out["actions"]:
            try:
                out["frames"].append(c.step(a).frames)
            except ServerError as e:
                out["errors"].append(e.code)
            out["messages"] += 1
        c.close()
        out["messages"] += 1


def _replay(endpoint: str, seed: int, actions) -> list[np.ndarray]:
    from runtime.client import Client

    with Client(endpoint, timeout_s=REPLY_TIMEOUT_S) as c:
        c.reset(seed=seed, revisit_decode=False)
        frames = [c.step(a).frames for a in actions]
        c.close()
    return frames


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _hostile(endpoint: str, limit_messages: int, deadline: float, stop: threading.Event, out: dict) -> None:
    """One fuzzer socket, one never-reading socket, now and then an endless message on a raw ZMTP
    connection; every request but the unread ones must be answered, every endless message closed."""
    import zmq

    from runtime.fuzz import _j, malformed
    from runtime.raw_zmtp import RawPeer

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    deaf = ctx.socket(zmq.DEALER)  # sends, never reads: its replies must be dropped, not hoarded
    for s in (sock, deaf):
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
    deaf.setsockopt(zmq.RCVHWM, 1)
    rng = random.Random(7)
    out.update(messages=0, unread=0, answered=0, unanswered=0, wrong_code=0, codes={}, endless=0,
               endless_not_closed=0)

    def rpc(parts):
        sock.send_multipart(parts)
        out["messages"] += 1
        if not sock.poll(int(REPLY_TIMEOUT_S * 1000)):
            out["unanswered"] += 1
            return None
        reply = json.loads(sock.recv_multipart()[0])
        out["answered"] += 1
        code = (reply.get("error") or {}).get("code", "ok")
        out["codes"][code] = out["codes"].get(code, 0) + 1
        return reply

    limit = rpc([_j({"op": "info"})])["limits"]["max_message_bytes"]
    i = 0
    while out["messages"] < limit_messages and time.monotonic() < deadline and not stop.is_set():
        i += 1
        if i % 500 == 250:  # a burst of requests whose replies are never read
            for _ in range(200):
                deaf.send_multipart([_j({"op": "info"})])
                out["unread"] += 1
        elif i % 500 == 125:  # a message that never ends: the server must close the connection
            with RawPeer(endpoint, timeout_s=REPLY_TIMEOUT_S) as peer:
                out["endless_not_closed"] += peer.send_endless_message(ENDLESS_BYTES) >= ENDLESS_BYTES
            out["endless"] += 1
        elif i % 100 == 0:  # a capacity that cannot work (mag with one slot): refused at reset
            r = rpc([_j({"op": "reset", "strategy": "mag", "capacity": 1})])
            out["wrong_code"] += r is not None and (r.get("error") or {}).get("code") != "bad_value"
        elif i % 100 == 50:  # a guessed token: another client's session must stay out of reach
            r = rpc([_j({"op": "memory", "token": secrets.token_hex(16)})])
            out["wrong_code"] += r is not None and (r.get("error") or {}).get("code") != "no_session"
        else:
            parts, want = malformed(rng, limit)
            r = rpc(parts)
            code = None if r is None else (r.get("error") or {}).get("code")
            out["wrong_code"] += r is not None and (code is None or want is not None and code != want
                                                     and code != "no_token")
    sock.close()
    deaf.close()


def run(args: argparse.Namespace) -> int:
    from runtime.bench_serve import _start
    from runtime.client import Client
    from worldmodel.machine import describe, report

    cmd = [sys.executable, "-m", "worldmodel.cli", "serve", "--bind", "tcp://127.0.0.1:*", "--random-weights",
           "--preset", args.preset, "--device", "cpu", "--threads", str(args.threads)]
    proc, endpoint, lines = _start(cmd)
    try:
        with Client(endpoint, timeout_s=REPLY_TIMEOUT_S) as c:
            c.info()
        rss_start = rss_bytes(proc.pid)
        t0 = time.monotonic()
        honest = [dict() for _ in range(args.clients)]
        hostile: dict = {}
        stop = threading.Event()
        threads = [threading.Thread(target=_honest, args=(endpoint, 100 + k, args.blocks, honest[k]))
                   for k in range(args.clients)]
        fuzzer = threading.Thread(target=_hostile, args=(endpoint, args.hostile_messages, t0 + args.seconds,
                                                         stop, hostile))
        fuzzer.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fuzzer.join()  # the fuzzer runs to its message count or its deadline
        soak_s = time.monotonic() - t0
        time.sleep(1.0)  # the hostile clients have left
        rss_end = rss_bytes(proc.pid)
        with Client(endpoint, timeout_s=REPLY_TIMEOUT_S) as c:
            stats = c.info().raw["stats"]
        mismatches = blocks = 0
        worst = float("inf")
        for k, h in enumerate(honest):
            solo = _replay(endpoint, 100 + k, h["actions"])
            for a, b in zip(h["frames"], solo):
                p = _psnr(a, b)
                worst = min(worst, p)
                mismatches += int(p < MATCH_PSNR)
                blocks += 1
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    result = {
        "model": f"{args.preset} (random weights)",
        "soak_s": round(soak_s, 1),
        "honest_clients": args.clients,
        "honest_messages": sum(h.get("messages", 0) for h in honest),
        "honest_errors": sum(len(h.get("errors", [])) for h in honest),
        "hostile_messages": hostile.get("messages", 0) + hostile.get("unread", 0),
        "hostile_answered": hostile.get("answered", 0),
        "hostile_unread_on_purpose": hostile.get("unread", 0),
        "unanswered": hostile.get("unanswered", 0),
        "hostile_wrong_code": hostile.get("wrong_code", 0),
        "hostile_endless_messages": hostile.get("endless", 0),
        "endless_messages_not_closed": hostile.get("endless_not_closed", 0),
        "replies_dropped": stats["replies_dropped"],
        "blocks_compared": blocks,
        "cross_session_mismatches": mismatches,
        "worst_block_psnr_vs_solo": None if worst == float("inf") else round(worst, 2),
        "server_alive": alive,
        "server_rss_mb_start": round(rss_start / 2**20, 1),
        "server_rss_mb_end": round(rss_end / 2**20, 1),
        "server_rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "machine": describe("cpu"),
    }
    code = report(result, args.json)
    ok = (alive and mismatches == 0 and result["unanswered"] == 0 and result["honest_errors"] == 0
          and result["hostile_wrong_code"] == 0 and result["endless_messages_not_closed"] == 0)
    if not ok:
        print("magworld bench soak: FAILED (see the figures above); server log tail:\n" + "".join(lines[-20:]),
              file=sys.stderr)
    return code if ok else 1
