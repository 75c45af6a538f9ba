"""`magworld serve`: the runtime server (protocol: docs/protocol.md)."""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile


def register(sub):
    p = sub.add_parser(
        "serve",
        help="run the world-model server (ZeroMQ, protocol v2)",
        description="magworld serve: load a checkpoint (autoencoder, generator, memory model) and serve "
        "generated frames to clients over ZeroMQ (docs/protocol.md). One session per client, each with "
        "its own rolling compressed memory. Binds loopback unless told otherwise; a remote bind needs "
        "CURVE keys or --insecure.",
    )
    p.add_argument("--checkpoint", help="checkpoint directory (default: the shipped doom-gpu, on every device)")
    p.add_argument("--preset", help="with --random-weights: model preset (tiny, doom-cpu, doom-gpu, doom-small)")
    p.add_argument("--random-weights", action="store_true", help="serve untrained weights of --preset (tests, speed)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ROUTER endpoint (a port of * picks a free one)")
    p.add_argument("--pub", help="PUB endpoint streaming every generated block (topic = session id)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--backend", default="torch", choices=["torch", "cudagraph", "onnxruntime", "tensorrt"],
                   help="torch (default): eager PyTorch; cudagraph: each network pass replayed as one CUDA graph, "
                   "steps of clients that arrive together batched (on CPU it runs eagerly)")
    p.add_argument("--export-cache", metavar="DIR",
                   help="onnxruntime/tensorrt: where a checkpoint is exported on first use (default: "
                   "$MAGWORLD_CACHE/exports, else ~/.cache/magworld/exports); the path used is printed")
    p.add_argument("--max-sessions", type=int, help="sessions held at once (default: as many as half the device "
                   "memory free at start holds, at most 64)")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds before an idle session is dropped")
    p.add_argument("--evict-after", type=float, default=30.0, help="a session not stepped for this many seconds "
                   "is evicted when a new client needs its place")
    p.add_argument("--queue-bytes", type=int, default=16 * 2**20, help="per connection: bytes of replies queued for "
                   "a client that does not read before they are dropped (and of requests waiting to be served)")
    p.add_argument("--max-capacity", type=int, help="memory slots a client may ask for (default: the config's capacity)")
    p.add_argument("--max-observe-blocks", type=int, default=16, help="blocks of frames per observe/reset request")
    p.add_argument("--max-message-bytes", type=int, help="larger requests get a too_large error, 4 times larger "
                   "ones close their connection (default: fits --max-observe-blocks blocks of frames)")
    p.add_argument("--max-message-parts", type=int, default=16, help="a message of more parts closes its "
                   "connection (tcp without CURVE: the input guard reads every message as it arrives)")
    p.add_argument("--curve-secret-key", help="server certificate with a secret key (zmq.auth.create_certificates)")
    p.add_argument("--curve-clients", help="folder of client public certificates allowed to connect")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without CURVE")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up block before serving")
    p.add_argument("--no-batching", action="store_true",
                   help="step each client's session alone, even when several steps arrive together")
    p.add_argument("--compile", action="store_true",
                   help="cudagraph: torch.compile the transformers' token paths before capture, so the graphs "
                   "replay fused kernels (worldmodel/model/fused.py; adds compile time at start)")
    p.set_defaults(func=run)


EXPORTED = ("onnxruntime", "tensorrt")  # the backends that run an export of the checkpoint


def build_backend(args) -> tuple[object, str, str]:
    """-> (backend, model name, device) from --checkpoint / --preset --random-weights."""
    import torch

    from runtime.backends import load_backend
    from worldmodel.bundle import WorldModel, default_checkpoint
    from worldmodel.config import preset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    compile_ = getattr(args, "compile", False)  # (callers may build args by hand)
    if compile_ and args.backend != "cudagraph":
        raise ValueError(f"--compile is for the cudagraph backend, not {args.backend}")
    cache = args.export_cache
    if cache and args.backend not in EXPORTED:
        raise ValueError(f"--export-cache is for the {' and '.join(EXPORTED)} backends, not {args.backend}")
    extra = {"cache": cache} if cache else {}
    if compile_:
        extra["compile"] = True
    if args.backend == "cudagraph":
        # the most steps one batched pass holds: batched graphs are captured for sizes up to it
        from runtime.backends.graph_batch import MAX_BATCH

        extra["max_batch"] = 1 if args.no_batching else min(MAX_BATCH, args.max_sessions or MAX_BATCH)
    if args.random_weights:
        if not args.preset:
            raise ValueError("--random-weights needs --preset (tiny, doom-cpu, doom-gpu, doom-small)")
        # Saved and reloaded like any checkpoint, so every backend serves it the same way.
        folder = tempfile.mkdtemp(prefix=f"magworld-{args.preset}-")
        atexit.register(shutil.rmtree, folder, True)
        WorldModel.random(preset(args.preset)).save(folder)
        return load_backend(args.backend, folder, device, **extra), f"{args.preset} (random weights)", device
    checkpoint = args.checkpoint or default_checkpoint(device)
    backend = load_backend(args.backend, checkpoint, device, **extra)
    return backend, backend.config.name, device


def run(args: argparse.Namespace) -> int:
    import zmq

    from export.manifest import ExportError
    from runtime.server import Server, ServerOptions, check_endpoints
    from worldmodel.train.checkpoint import CheckpointError

    opts = ServerOptions(
        bind=args.bind, pub=args.pub, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
        evict_after_s=args.evict_after, queue_bytes=args.queue_bytes,
        max_capacity=args.max_capacity, max_observe_blocks=args.max_observe_blocks,
        max_message_bytes=args.max_message_bytes, max_message_parts=args.max_message_parts, insecure=args.insecure,
        curve_secret_key=args.curve_secret_key, curve_clients=args.curve_clients, batch_steps=not args.no_batching,
    )
    try:
        check_endpoints(opts)  # before the model loads: fail fast
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        backend, name, device = build_backend(args)
    except (FileNotFoundError, ValueError, CheckpointError, ExportError) as e:  # a damaged checkpoint: one line, no server
        print(f"magworld serve: {e}", file=sys.stderr)
        return 2
    server = Server(backend, opts, model_name=name, device=device)
    try:
        server.bind()
    except (ValueError, RuntimeError, zmq.ZMQError) as e:  # ZMQError: e.g. the address is in use
        print(f"magworld serve: {e}", file=sys.stderr)
        return 2
    if not args.no_warmup:
        warm_up(backend)
    server.serve_forever()
    return 0


def warm_up(backend) -> None:
    """One block on a throwaway session, so the first client does not pay one-time costs."""
    import numpy as np

    cfg = backend.config
    session = backend.new_session()
    session.step(np.zeros((cfg.model.block_frames, cfg.model.action_dim), np.float32), None, None)
