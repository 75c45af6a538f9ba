"""The magworld server: a ZeroMQ ROUTER socket, sessions by token (docs/protocol.md).

One thread, one Poller loop: the requests that have arrived are taken off the socket together
and served in arrival order, except that the `step`s of different clients run as one batched
model pass where the backend can (the torch backend batches sessions of the same strategy,
worldmodel/rollout_batch.py; the cudagraph backend those of one plan at the same number of
attended slots, runtime/backends/graph_batch.py). Model calls are synchronous, so a client's `step` holds the others
for its duration; clients see that as latency, never as an error. Everything a client can send is bounded
(message size, frames per request, sessions, memory per session, messages queued each way per
connection) and every request gets exactly one reply, an error reply for anything malformed; an
exception in model code becomes an `internal` error and leaves the session as it was. Sessions
are found by the random token `reset` returns (runtime/sessions.py), never by the routing id.
Without CURVE a tcp:// endpoint is served through an input guard (runtime/input_guard.py) that
closes a connection whose message grows past the hard limit, however many parts it has.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import zmq

from runtime import protocol as P
from runtime.backends.base import Backend
from runtime.input_guard import InputGuard
from runtime.pose_tracker import PoseTracker
from runtime.revisit import RevisitChecker
from runtime.sessions import Session, SessionTable
from worldmodel.actions import POSE_NAMES, action_space_description
from worldmodel.config import MemoryConfig
from worldmodel.memory import make_strategy

POLL_MS = 200  # how often the loop looks at the stop flag and idle sessions
MAX_DRAIN = 64  # requests taken off the socket at once (and the most steps one batch can hold)
PUB_HWM = 64  # messages queued per spectator before the PUB socket drops frames for it
MAX_SESSIONS_CAP = 64  # however much memory there is: one thread serves them all
SESSION_MEMORY_SHARE = 0.5  # of the device memory free at start that sessions may take
HARD_LIMIT_FACTOR = 4  # a message over this many times max_message_bytes closes its connection: no error reply


@dataclass
class ServerOptions:
    bind: str = "tcp://127.0.0.1:5555"
    pub: str | None = None  # PUB endpoint for spectators and recorders
    max_sessions: int | None = None  # default: as many as half the free device memory holds (session_limit)
    idle_timeout_s: float = 300.0
    evict_after_s: float = 30.0  # a session not stepped for this long may be evicted for a new client
    queue_bytes: int = 16 * 2**20  # per connection and direction: replies (or requests) libzmq may queue
    max_capacity: int | None = None  # slots per session; default: the model config's capacity
    max_observe_blocks: int = P.DEFAULT_MAX_OBSERVE_BLOCKS
    max_message_bytes: int | None = None  # default: room for max_observe_blocks of frames
    max_message_parts: int = 16  # more parts close the connection (the protocol uses 1 or 2, a REQ client adds one)
    insecure: bool = False  # allow a non-loopback bind without CURVE
    curve_secret_key: str | None = None  # certificate file (zmq.auth.create_certificates) of the server
    curve_clients: str | None = None  # folder of authorised client public certificates
    batch_steps: bool = True  # run the steps of different clients that arrive together as one pass


def is_loopback(endpoint: str) -> bool:
    """True when every address the endpoint's host resolves to is a loopback address (ipc and
    inproc are local by nature). A name that does not resolve, `*` or an interface name is not."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    try:
        host = urlsplit(endpoint).hostname or ""
    except ValueError:
        return False
    if not host or host == "*":
        return False
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    try:
        return bool(addrs) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addrs)
    except ValueError:
        return False


def session_limit(backend: Backend, device: str, max_capacity: int) -> int:
    """How many sessions the device's memory holds: half the memory free now over what one
    session of `max_capacity` slots takes (its K/V buffers, twice over for the working set),
    between 1 and MAX_SESSIONS_CAP."""
    per_session = 2 * max_capacity * backend.bytes_per_slot() + 2**20
    free = _free_memory(device)
    return max(1, min(MAX_SESSIONS_CAP, int(free * SESSION_MEMORY_SHARE) // per_session))


def _free_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def check_endpoints(opts: ServerOptions) -> None:
    """Refuse a non-loopback bind that is neither encrypted (CURVE) nor explicitly --insecure."""
    for ep in filter(None, (opts.bind, opts.pub)):
        if not is_loopback(ep) and opts.curve_secret_key is None and not opts.insecure:
            raise ValueError(
                f"refusing to bind {ep} (not loopback) without encryption: give --curve-secret-key "
                "(and --curve-clients to authorise clients), or --insecure to accept anyone on the network"
            )


@dataclass
class StepContext:
    """A step between its validation and its model pass (see Server._step_begin)."""

    session: Session
    actions: np.ndarray  # [B, A]
    client_poses: np.ndarray | None  # [B, pose_dim] as the client sent them
    poses: np.ndarray  # [B, pose_dim] the client's, or integrated from the actions
    scene: int | None
    tracker: PoseTracker  # advanced copy, committed by _step_end
    first: int  # index of the block's first frame


class Server:
    def __init__(self, backend: Backend, options: ServerOptions, model_name: str = "", device: str = "cpu",
                 log=None, context: zmq.Context | None = None):
        self.backend = backend
        self.opts = options
        self.model_name = model_name or backend.config.name
        self.device = device
        self.log_file = log or sys.stderr
        cfg = backend.config
        self.memory_cfg = cfg.memory
        max_capacity = options.max_capacity or cfg.memory.capacity_frames
        self.shape = P.ModelShape(
            block_size=cfg.model.block_frames,
            height=cfg.autoencoder.frame_height,
            width=cfg.autoencoder.frame_width,
            num_scenes=cfg.model.num_scenes,
            strategies=tuple(backend.strategies()),
            max_capacity=max_capacity,
            bytes_per_slot=backend.bytes_per_slot(),
            max_observe_blocks=options.max_observe_blocks,
        )
        self.max_message_bytes = options.max_message_bytes or self.shape.default_max_message_bytes()
        # Above max_message_bytes a request gets `too_large`; above this it is not read at all: a
        # part this large is refused by libzmq (ZMQ_MAXMSGSIZE), a message this large in all its
        # parts by the input guard, each closing the connection.
        self.hard_message_bytes = HARD_LIMIT_FACTOR * self.max_message_bytes
        self.strategies = backend.strategies()
        # The largest reply: a block of frames (step, decode_memory) or a slot table (memory).
        self.max_reply_bytes = (self.shape.block_size * self.shape.frame_bytes + P.MAX_HEADER_BYTES
                                + 256 * max_capacity)
        max_sessions = options.max_sessions or session_limit(backend, device, max_capacity)
        self.sessions = SessionTable(max_sessions, options.idle_timeout_s, options.evict_after_s)
        self.replies_dropped = {"not_reading": 0, "gone": 0}
        self.ctx = context or zmq.Context.instance()
        self.router = self.pub = self.auth = None
        self.endpoint = self.pub_endpoint = None
        self.guards: list[InputGuard] = []
        self._private_dir: str | None = None  # where the guarded sockets bind their ipc endpoints
        self._stop = threading.Event()
        self.requests = 0

    # ------------------------------------------------------------------ sockets

    def log(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} magworld serve: {msg}", file=self.log_file, flush=True)

    def bind(self) -> str:
        """Open the sockets. Returns the ROUTER endpoint clients connect to (a `*` port resolved)."""
        check_endpoints(self.opts)
        try:
            return self._bind_sockets()
        except BaseException:
            self._release()
            raise

    def _bind_sockets(self) -> str:
        secure = self.opts.curve_secret_key is not None
        self.router = self.ctx.socket(zmq.ROUTER)
        # No ROUTER_HANDOVER: a connection cannot take over a routing id in use (and its replies).
        # Sessions follow their token, so a reconnecting client needs no old routing id.
        self.router.setsockopt(zmq.MAXMSGSIZE, self.hard_message_bytes)
        # Queues per connection sized in bytes: at most `queue_bytes` of replies wait for a client
        # that does not read (then they are dropped and counted), and as much of requests waits
        # to be served (then libzmq stops reading that connection).
        self.router.setsockopt(zmq.SNDHWM, max(2, self.opts.queue_bytes // self.max_reply_bytes))
        self.router.setsockopt(zmq.RCVHWM, max(2, self.opts.queue_bytes // self.max_message_bytes))
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply that cannot be queued raises, so it is counted
        self.router.setsockopt(zmq.LINGER, 0)
        if secure:
            self._setup_curve(self.router)
        self.endpoint = self._bind(self.router, self.opts.bind, "router")
        if self.opts.pub:
            self.pub = self.ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
            self.pub.setsockopt(zmq.MAXMSGSIZE, self.hard_message_bytes)  # what a subscriber sends: subscriptions
            self.pub.setsockopt(zmq.LINGER, 0)
            if secure:
                self._setup_curve(self.pub)
            self.pub_endpoint = self._bind(self.pub, self.opts.pub, "pub")
        return self.endpoint

    def _bind(self, sock, endpoint: str, name: str) -> str:
        """Bind `sock` where its clients reach it; returns the endpoint they connect to. A tcp://
        endpoint without CURVE is an InputGuard's, relaying to `sock` bound on ipc:// in a folder of
        this process's own (mode 0700: no other user can go round the guard); anything else is
        bound directly (under CURVE the guard cannot read the encrypted frames)."""
        if not endpoint.startswith("tcp://") or self.opts.curve_secret_key is not None:
            sock.bind(endpoint)
            bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
            who = ("a peer" if not endpoint.startswith("tcp://") else "a client of --curve-clients"
                   if self.opts.curve_clients else "any client with the server's public key")
            self.log(f"{bound}: no input guard (it reads plain tcp:// only): {who} can make libzmq hold an "
                     "unfinished multipart message of any length (docs/protocol.md, Limits)")
            return bound
        if self._private_dir is None:
            self._private_dir = tempfile.mkdtemp(prefix="magworld-serve-")
        path = os.path.join(self._private_dir, name)
        sock.bind(f"ipc://{path}")
        guard = InputGuard(endpoint, path, self.hard_message_bytes, self.opts.max_message_parts, self.log)
        self.guards.append(guard)
        return guard.start()

    def _setup_curve(self, sock) -> None:
        import zmq.auth

        if not zmq.has("curve"):
            raise RuntimeError("this libzmq has no CURVE support")
        public, secret = zmq.auth.load_certificate(self.opts.curve_secret_key)
        if secret is None:
            raise ValueError(f"{self.opts.curve_secret_key} holds no secret key (use the .key_secret file)")
        if self.opts.curve_clients and self.auth is None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain="*", location=self.opts.curve_clients)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self._stop.set()

    def serve_forever(self) -> None:
        if self.router is None:
            self.bind()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self.log(f"listening on {self.endpoint}" + (f", frames published on {self.pub_endpoint}" if self.pub else "")
                 + f" (model {self.model_name}, backend {self.backend.name}, device {self.device})")
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                try:
                    ready = dict(poller.poll(POLL_MS))
                except zmq.ZMQError as e:
                    if e.errno == zmq.EINTR:
                        continue
                    raise
                if self.router in ready:
                    msgs = []
                    for _ in range(MAX_DRAIN):  # what has arrived, up to a bound; then the stop flag again
                        try:
                            msgs.append(self.router.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                    self._serve_messages(msgs)
                for s in self.sessions.expire():
                    self.log(f"session {s.sid} expired after {self.opts.idle_timeout_s:g} s idle ({s.blocks} blocks)")
        finally:
            self.close()

    def close(self) -> None:
        for s in self.sessions:
            self.sessions.close(s.token)
        self._release()
        self.log(f"shut down after {self.requests} requests")

    def _release(self) -> None:
        """Stop the guards, close the sockets, remove the private folder."""
        for guard in self.guards:
            guard.stop()
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        self.router = self.pub = self.auth = self._private_dir = None
        self.guards = []

    def _serve_messages(self, msgs: list[list[bytes]]) -> None:
        """Serve the requests that arrived together, each client's in its order. Where the
        backend batches (Backend.step_many), the `step`s of different clients run as one pass;
        a client's second request in the same batch waits for the first to be answered."""
        pending: list[tuple] = []
        for msg in msgs:
            # A REQ client puts an empty delimiter after its routing id; a DEALER client does not.
            cut = 2 if len(msg) >= 3 and msg[1] == b"" else 1
            envelope, parts = msg[:cut], msg[cut:]
            identity = envelope[0]
            got = self._admit(parts)
            if pending and (any(p[1] == identity for p in pending) or not isinstance(got, list)
                            and any(p[3].token == got[0].token for p in pending)):
                self._run_steps(pending)  # this client's (or session's) earlier step is answered first
                pending = []
                got = self._admit(parts, count=False)  # it may be a retry of that step
            if isinstance(got, list):  # an error reply, or the cached reply of a retry
                self._send(envelope, got)
                continue
            req, key = got
            if req.op == "step" and self.backend.batches_steps and self.opts.batch_steps:
                try:
                    pending.append((envelope, identity, key, req, self._step_begin(req)))
                except Exception as e:
                    self._send(envelope, self._remember(req, key, self._error_reply(req, e)))
                continue
            self._send(envelope, self._remember(req, key, self._dispatch(req)))
        self._run_steps(pending)

    def _send(self, envelope: list[bytes], out: list) -> None:
        try:
            self.router.send_multipart(envelope + out, flags=zmq.NOBLOCK)
        except zmq.Again:  # its queue holds `queue_bytes` of unread replies: the client does not read
            self.replies_dropped["not_reading"] += 1
        except zmq.ZMQError:  # EHOSTUNREACH: the connection is gone; the session stays until it idles out
            self.replies_dropped["gone"] += 1

    def _run_steps(self, pending: list[tuple]) -> None:
        """The model pass of the pending steps (one batch where the backend can), then each reply."""
        if not pending:
            return
        ctxs = [p[4] for p in pending]
        t0 = time.perf_counter()
        self.backend.last_pass_sizes = None
        results = self.backend.step_many([c.session.engine for c in ctxs], [c.actions for c in ctxs],
                                         [c.poses for c in ctxs], [c.scene for c in ctxs])
        model_s = time.perf_counter() - t0
        sizes = self.backend.last_pass_sizes  # the steps of the pass that made each block, where known
        if sizes is None or len(sizes) != len(pending):
            sizes = [len(pending)] * len(pending)
        for (envelope, identity, key, req, ctx), frames, size in zip(pending, results, sizes):
            try:
                if isinstance(frames, Exception):
                    raise frames
                out = self._step_end(req, ctx, frames, model_s, size)
            except Exception as e:
                out = self._error_reply(req, e)
            self._send(envelope, self._remember(req, key, out))

    # ------------------------------------------------------------------ dispatch

    def handle(self, identity: bytes, parts: list[bytes]) -> list:
        """One request -> one reply (list of parts). Never raises. (`identity`, the routing id,
        only routes replies; it is kept in the signature for callers that serve one message.)"""
        got = self._admit(parts)
        if isinstance(got, list):
            return got
        req, key = got
        return self._remember(req, key, self._dispatch(req))

    def _admit(self, parts: list[bytes], count: bool = True):
        """Count and parse a request: (request, retry key), or the reply to send at once (a
        malformed request's error, or the kept reply when this is a retry of the last request)."""
        self.requests += count
        try:
            req = P.parse_request(parts, self.max_message_bytes)
        except P.ProtocolError as e:
            return P.error_reply(P.safe_id(parts), e.code, e.message)
        key = None
        if req.id is not None and req.op not in ("info", "heartbeat"):
            key = _digest(parts)
            # A retry of a session's last request is answered from its kept reply, not run twice;
            # a retried first `reset` carries no token yet, so it is found by its digest alone.
            session = self.sessions.get(req.token) if req.token is not None else self.sessions.find_request(key)
            if session is not None and session.last_request == key:
                return session.last_reply
        return req, key

    def _dispatch(self, req) -> list:
        try:
            return getattr(self, f"_op_{req.op}")(req)
        except Exception as e:
            return self._error_reply(req, e)

    def _error_reply(self, req, e: Exception) -> list:
        if isinstance(e, P.ProtocolError):
            return P.error_reply(req.id, e.code, e.message)
        # model code: report, keep serving
        self.log(f"internal error in {req.op}: {type(e).__name__}: {e}\n"
                 + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        return P.error_reply(req.id, P.INTERNAL, f"{req.op} failed inside the model: {type(e).__name__}: {e}"[:1000])

    def _remember(self, req, key, out: list) -> list:
        """Keep the reply for a retry of the same request (Lazy Pirate clients resend)."""
        if key is not None:
            token = req.token
            if req.op == "reset" and out and token is None:  # a first reset: the session it opened
                token = json.loads(out[0]).get("token")
            session = self.sessions.get(token)
            if session is not None:
                session.last_request, session.last_reply = key, out
        return out

    def _session(self, req, stepping: bool = False) -> Session:
        if req.token is None:
            raise P.ProtocolError(P.NO_TOKEN, f"'{req.op}' needs the session's 'token' (the string 'reset' "
                                  "returned): send it in every request of the session")
        s = self.sessions.require(req.token)
        if stepping:
            s.last_stepped = time.monotonic()
        return s

    # ------------------------------------------------------------------ ops

    def info(self) -> dict:
        m = self.memory_cfg
        return {
            "protocol": P.PROTOCOL_VERSION,
            "model": self.model_name,
            "backend": self.backend.name,
            "device": self.device,
            "frame_shape": [self.shape.height, self.shape.width, 3],
            "block_size": self.shape.block_size,
            "actions": action_space_description(),
            "pose": list(POSE_NAMES),
            "scenes": self.shape.num_scenes,
            "memory": {
                "strategy": m.strategy,
                "strategies": list(self.strategies),
                "capacity": min(m.capacity_frames, self.shape.max_capacity),
                "max_capacity": self.shape.max_capacity,
                "attention_budget": min(m.attention_budget, self.shape.max_capacity),
                "bytes_per_slot": self.shape.bytes_per_slot,
            },
            "limits": {
                "max_message_bytes": self.max_message_bytes,
                "max_message_parts": self.opts.max_message_parts,
                "max_observe_blocks": self.shape.max_observe_blocks,
                "max_sessions": self.sessions.max_sessions,
                "idle_timeout_s": self.sessions.idle_timeout_s,
                "evict_after_s": self.sessions.evict_after_s,
                "queued_replies": self.router.getsockopt(zmq.SNDHWM) if self.router is not None else None,
            },
            "sessions": len(self.sessions),
            "stats": {"requests": self.requests, "sessions_evicted": self.sessions.evicted,
                      "replies_dropped": dict(self.replies_dropped),
                      "connections_dropped": sum(g.dropped for g in self.guards)},
            "pub": self.pub_endpoint,
        }

    def _op_info(self, req):
        P.parse_plain(req)
        return P.reply(req.id, self.info())

    def _op_heartbeat(self, req):
        """Liveness, without a model call: with a token, also whether its session is alive."""
        P.parse_plain(req)
        body = {"alive": True, "sessions": len(self.sessions)}
        if req.token is not None:
            body["session"] = self.sessions.require(req.token).sid  # no_session/evicted when it is gone
        return P.reply(req.id, body)

    def _op_reset(self, req):
        args = P.parse_reset(req, self.shape)
        strategy = args.strategy or self.memory_cfg.strategy
        if strategy not in self.strategies:
            raise P.ProtocolError(P.BAD_VALUE, f"strategy {strategy!r} is not served by this model; "
                                  f"choose one of {list(self.strategies)}")
        capacity = args.capacity or min(self.memory_cfg.capacity_frames, self.shape.max_capacity)
        budget = min(args.attention_budget or self.memory_cfg.attention_budget, capacity)
        mem_cfg = MemoryConfig(strategy, capacity, self.memory_cfg.window_frames, self.memory_cfg.sink_frames, budget)
        problem = make_strategy(mem_cfg, self.shape.block_size).capacity_error(capacity)
        if problem:
            raise P.ProtocolError(P.BAD_VALUE, problem)
        if not args.retrieval and strategy != "mag":
            raise P.ProtocolError(P.BAD_VALUE, f"'retrieval' switches mag's pose retrieval; strategy {strategy!r} has none")
        old = self.sessions.get(req.token)  # a reset of this client's session (unknown token: a new one)
        # Build the whole new session first: a failure leaves the old one untouched.
        engine = self.backend.new_session(strategy, capacity, budget, args.seed)
        engine.retrieval = args.retrieval
        tracker = PoseTracker()
        revisit = RevisitChecker(decode=args.revisit_decode) if args.revisit else None
        if args.frames is not None:
            poses = tracker.advance(args.actions, args.poses)
            engine.observe(args.frames, args.actions, poses)
            if revisit is not None:
                revisit.record(0, args.frames, engine.memory_state()["slots"])
        fields = dict(engine=engine, tracker=tracker, revisit=revisit, scene=args.scene, strategy=strategy,
                      attention_budget=budget, retrieval=args.retrieval)
        if old is not None:
            s = self.sessions.replace(old, **fields)
            self.log(f"session {old.sid} replaced by a reset ({old.blocks} blocks)")
        else:
            evicted = self.sessions.make_room()
            if evicted is not None:
                self.log(f"session {evicted.sid} evicted ({evicted.blocks} blocks, no step for "
                         f"{time.monotonic() - evicted.last_stepped:.0f} s) to make room for a new client")
            s = self.sessions.open(**fields)
        self.log(f"session {s.sid} opened: strategy {strategy}, capacity {capacity}, attention budget {budget}, "
                 f"retrieval {'on' if args.retrieval else 'off'}, seed {args.seed}, "
                 f"{len(self.sessions)}/{self.sessions.max_sessions} sessions")
        return P.reply(req.id, {
            "session": s.sid, "token": s.token, "next_frame": engine.next_frame, "strategy": strategy,
            "capacity": capacity, "attention_budget": budget, "retrieval": args.retrieval, "scene": args.scene,
            "pose": tracker.pose.tolist(),
        })

    def _op_observe(self, req):
        s = self._session(req, stepping=True)
        frames, actions, poses = P.parse_observe(req, self.shape)
        tracker = copy.deepcopy(s.tracker)  # committed only once the engine has succeeded
        poses = tracker.advance(actions, poses)
        first = s.engine.next_frame
        s.engine.observe(frames, actions, poses)
        s.tracker = tracker
        state = s.engine.memory_state()
        if s.revisit is not None:
            s.revisit.record(first, frames, state["slots"])
        return P.reply(req.id, {"first_frame": first, "next_frame": s.engine.next_frame, "frames": len(frames),
                                "pose": tracker.pose.tolist(), "memory_used": state["used"]})

    def _op_step(self, req):
        ctx = self._step_begin(req)
        t0 = time.perf_counter()
        frames = ctx.session.engine.step(ctx.actions, ctx.poses, ctx.scene)
        return self._step_end(req, ctx, frames, time.perf_counter() - t0, 1)

    def _step_begin(self, req) -> "StepContext":
        """Everything of a step before the model runs: parse, validate, advance a copy of the pose."""
        s = self._session(req, stepping=True)
        actions, client_poses, scene = P.parse_step(req, self.shape)
        tracker = copy.deepcopy(s.tracker)
        poses = tracker.advance(actions, client_poses)
        return StepContext(s, actions, client_poses, poses, s.scene if scene is None else scene, tracker,
                           s.engine.next_frame)

    def _step_end(self, req, ctx: "StepContext", frames, model_s: float, batch: int) -> list:
        """Everything of a step after the model made its frames: commit, revisit check, reply, PUB."""
        s, actions, client_poses, poses, tracker, first = (ctx.session, ctx.actions, ctx.client_poses, ctx.poses,
                                                           ctx.tracker, ctx.first)
        t1 = time.perf_counter()
        want = (self.shape.block_size, self.shape.height, self.shape.width, 3)
        if frames.shape != want or frames.dtype != np.uint8:
            raise RuntimeError(f"backend returned frames {frames.shape} {frames.dtype}, expected {want} uint8")
        s.tracker = tracker
        s.blocks += 1
        state = s.engine.memory_state()
        report = None
        if s.revisit is not None:
            s.revisit.record(first, frames, state["slots"])
            try:
                report = s.revisit.check(poses[-1], frames[-1], first + len(frames) - 1, state["slots"],
                                         s.engine.decode_slot)
            except Exception as e:  # the block is generated and kept; only the check failed
                report = {"error": f"{type(e).__name__}: {e}"[:300]}
        t2 = time.perf_counter()
        body = {
            "session": s.sid, "first_frame": first, "next_frame": s.engine.next_frame,
            "shape": list(frames.shape), "dtype": "uint8",
            "poses": np.round(poses.astype(np.float64), 4).tolist(),
            "pose_source": "client" if client_poses is not None else "integrated",
            "timings": {"model_ms": round(1000 * model_s, 3), "revisit_ms": round(1000 * (t2 - t1), 3),
                        "batch": batch},
            "revisit": report,
            "memory": {"used": state["used"], "capacity": state["capacity"], "bytes_held": state["bytes_held"],
                       # what the HUD compares with a full cache, and how far back the memory reaches
                       "frames_per_slot": state.get("frames_per_slot"),
                       "oldest_frame": min((e["frame"] for e in state["slots"]), default=None)},
        }
        payload = np.ascontiguousarray(frames).tobytes()
        if self.pub is not None:
            head = {k: body[k] for k in ("session", "first_frame", "shape", "dtype", "poses")}
            head["actions"] = actions.tolist()
            try:
                self.pub.send_multipart([s.sid.encode(), json.dumps(head).encode(), payload], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # spectators never slow the players down
        return P.reply(req.id, body, payload)

    def _op_memory(self, req):
        P.parse_plain(req)
        s = self._session(req)
        state = dict(s.engine.memory_state())
        # An uncompressed cache (every frame's K/V, as Self Forcing keeps) would hold this much now.
        state.setdefault("full_cache_bytes", s.engine.next_frame * state["bytes_per_slot"])
        state.update(strategy=s.strategy, attention_budget=s.attention_budget, retrieval=s.retrieval,
                     next_frame=s.engine.next_frame, session=s.sid)
        return P.reply(req.id, state)

    def _op_decode_memory(self, req):
        slot = P.parse_decode_memory(req, self.shape)
        s = self._session(req)
        held = {e["slot"]: e for e in s.engine.memory_state()["slots"]}
        if slot not in held:
            raise P.ProtocolError(P.BAD_VALUE, f"slot {slot} holds nothing; used slots: {sorted(held)}"[:500])
        frames = np.ascontiguousarray(s.engine.decode_slot(slot))
        return P.reply(req.id, {"slot": slot, "frame": held[slot]["frame"], "pose": held[slot]["pose"],
                                "shape": list(frames.shape), "dtype": "uint8"}, frames.tobytes())

    def _op_close(self, req):
        P.parse_plain(req)
        if req.token is None:
            raise P.ProtocolError(P.NO_TOKEN, "'close' needs the session's 'token' (the string 'reset' returned)")
        s = self.sessions.close(req.token)
        if s is not None:
            self.log(f"session {s.sid} closed by its client ({s.blocks} blocks, {len(self.sessions)} sessions left)")
        return P.reply(req.id, {"closed": s is not None})


def _digest(parts: list[bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()
