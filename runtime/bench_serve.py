"""`magworld bench serve`: the whole runtime as a client sees it, over loopback ZeroMQ.

Starts `magworld serve` in a child process, opens a session per client and times every `step`
from sending the actions to having the block's frames (action-to-frame latency). Reports
frames/s (all clients together), latency p50/p99, and the cost per block early and late in the
session (the rolling memory should keep them equal), and names the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np


def register(sub):
    p = sub.add_parser(
        "serve",
        help="time the server end to end: frames/s and action-to-frame latency over loopback ZeroMQ",
        description="magworld bench serve: start `magworld serve` in a child process and drive it with "
        "clients over loopback ZeroMQ; print frames/s, action-to-frame latency (p50, p99), and the "
        "cost per block at the start and at the end of a long session.",
    )
    p.add_argument("--checkpoint", help="checkpoint directory (default: the shipped one for the device)")
    p.add_argument("--preset", help="with --random-weights: model preset")
    p.add_argument("--random-weights", action="store_true", help="untrained weights of --preset")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--backend", default="torch", choices=["torch", "cudagraph", "onnxruntime", "tensorrt"],
                   help="torch (default): eager PyTorch; cudagraph: each network pass replayed as one CUDA graph, "
                   "steps of clients that arrive together batched (on CPU it runs eagerly)")
    p.add_argument("--blocks", type=int, default=200, help="timed blocks per client")
    p.add_argument("--warmup", type=int, default=10, help="untimed blocks first")
    p.add_argument("--clients", type=int, default=1, help="clients stepping at once, one session each")
    p.add_argument("--window", type=int, default=50, help="blocks compared at the start and the end of the session")
    p.add_argument("--strategy", help="memory strategy of the sessions (default: the model's)")
    p.add_argument("--no-revisit", action="store_true", help="turn the revisit check off")
    p.add_argument("--no-batching", action="store_true", help="the server steps each session alone")
    p.add_argument("--compile", action="store_true", help="cudagraph: the server compiles the token paths (serve --compile)")
    p.add_argument("--threads", type=int, help="torch CPU threads of the server")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.set_defaults(func=run)


def _server_cmd(args) -> list[str]:
    cmd = [sys.executable, "-m", "worldmodel.cli", "serve", "--bind", "tcp://127.0.0.1:*",
           "--backend", args.backend, "--max-sessions", str(max(args.clients, 1))]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.random_weights:
        cmd += ["--random-weights", "--preset", args.preset or "doom-gpu"]
    if args.device:
        cmd += ["--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.no_batching:
        cmd += ["--no-batching"]
    if args.compile:
        cmd += ["--compile"]
    return cmd


def _start(cmd) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()
    endpoint = []

    def drain():
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"listening on (\S+?)(?:,| \()", line)
            if m:
                endpoint.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    found.wait(600)
    if not endpoint:
        proc.kill()
        raise RuntimeError("the server did not start:\n" + "".join(lines))
    return proc, endpoint[0], lines


def _drive(endpoint, args, seed, out: dict, ready: threading.Barrier) -> None:
    """One client: warm-up blocks, then (once every client is warm: `ready`) the timed ones."""
    try:
        _client(endpoint, args, seed, out, ready)
    except BaseException:
        ready.abort()  # the other clients stop waiting for this one
        raise


def _client(endpoint, args, seed, out: dict, ready: threading.Barrier) -> None:
    from runtime.client import Client

    with Client(endpoint, timeout_s=120) as c:
        info = c.info()
        b = info.block_size
        c.reset(seed=seed, strategy=args.strategy, revisit=not args.no_revisit)
        rng = np.random.default_rng(seed)
        lat, model, batch = [], [], []
        for i in range(args.warmup + args.blocks):
            if i == args.warmup:
                # Sessions start (and the cudagraph backend captures their graphs) one after
                # another: the timed wall starts when all of them are warm.
                ready.wait()
                out["t_start"] = time.perf_counter()
            a = np.zeros((b, 4), np.float32)
            a[:, 0] = rng.choice([-5.625, 0.0, 5.625])  # wander: turn and walk, so retrieval has work to do
            a[:, 2] = rng.choice([0.0, 10.0])
            t0 = time.perf_counter()
            block = c.step(a)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                lat.append(dt)
                model.append(block.timings["model_ms"] / 1000)
                batch.append(block.timings.get("batch", 1))
        out["t_end"] = time.perf_counter()
        out.update(info=info.raw, lat=lat, model=model, batch=batch, memory=c.memory())
        c.close()


def run(args: argparse.Namespace) -> int:
    from worldmodel.machine import describe, report

    proc, endpoint, lines = _start(_server_cmd(args))
    try:
        results = [dict() for _ in range(args.clients)]
        ready = threading.Barrier(args.clients, timeout=300)
        threads = [threading.Thread(target=_drive, args=(endpoint, args, 1 + k, results[k], ready))
                   for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    if any("lat" not in r for r in results):
        print("magworld bench serve: a client failed; server log:\n" + "".join(lines), file=sys.stderr)
        return 1
    info = results[0]["info"]
    b = info["block_size"]
    lat = np.concatenate([r["lat"] for r in results])
    first = np.concatenate([r["model"][: args.window] for r in results])
    last = np.concatenate([r["model"][-args.window:] for r in results])
    mem = results[0]["memory"]
    total_blocks = sum(len(r["lat"]) for r in results)
    wall = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    device = info["device"]
    result = {
        "model": info["model"],
        "backend": info["backend"],
        "device": device,
        "frame_shape": info["frame_shape"],
        "block_size": b,
        "clients": args.clients,
        "strategy": mem["strategy"],
        "frames_per_s": round(b * total_blocks / wall, 2) if args.clients > 1 else
        round(b * len(lat) / float(np.sum(lat)), 2),
        "steps_per_model_pass": round(float(np.mean(np.concatenate([r["batch"] for r in results]))), 2),
        "latency_ms_p50": round(1000 * float(np.median(lat)), 2),
        "latency_ms_p99": round(1000 * float(np.percentile(lat, 99)), 2),
        "block_ms_first": round(1000 * float(np.median(first)), 2),
        "block_ms_last": round(1000 * float(np.median(last)), 2),
        "late_vs_early": round(float(np.median(last) / np.median(first)), 3),
        "session_frames": mem["next_frame"],
        "memory_slots": f"{mem['used']}/{mem['capacity']}",
        "memory_bytes_held": mem["bytes_held"],
        "full_cache_bytes": mem["full_cache_bytes"],
        "machine": describe(device),
    }
    if device == "cpu":
        threads = args.threads or os.cpu_count()
        result["machine"] = re.sub(r"\(\d+ threads\)", f"(server: {threads} threads)", result["machine"])
    return report(result, args.json)
