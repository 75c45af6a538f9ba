"""The session table: sessions by their random token, at most `max_sessions`, idle ones make room.

A session owns an EngineSession (generator state + KV memory), the camera pose, the revisit
checker, and the last reply it sent (so that a retried request is answered, not run twice).

The token is the session's only credential: 128 random bits that `reset` returns and every later
request carries. The ZeroMQ routing id only says where a reply goes; knowing or guessing another
client's routing id gives nothing.

Room: when a new session would exceed `max_sessions`, the least recently *stepped* session that
has not stepped (reset, observe, step) for `evict_after_s` is evicted; its client hears `evicted`
on its next request. Cheap requests (`memory`, `heartbeat`) do not keep a session from eviction.
Sessions idle for `idle_timeout_s` expire whatever the load.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from runtime.backends.base import EngineSession
from runtime.pose_tracker import PoseTracker
from runtime.protocol import BUSY, EVICTED, NO_SESSION, ProtocolError
from runtime.revisit import RevisitChecker

GONE_REMEMBERED = 4096  # tokens of evicted/expired sessions kept, to tell their clients why


@dataclass
class Session:
    sid: str  # short public name: PUB topic, log lines
    token: str  # the credential (hex), never logged or published
    engine: EngineSession
    tracker: PoseTracker
    revisit: RevisitChecker | None
    scene: int | None
    strategy: str
    attention_budget: int
    retrieval: bool = True
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)  # any request
    last_stepped: float = field(default_factory=time.monotonic)  # reset, observe, step
    blocks: int = 0
    last_request: bytes | None = None  # digest of the last request that carried an id
    last_reply: list | None = None


class SessionTable:
    def __init__(self, max_sessions: int, idle_timeout_s: float, evict_after_s: float = 30.0):
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.evict_after_s = evict_after_s
        self._by_token: dict[str, Session] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()  # token -> why ("evicted" / "expired" / "closed")
        self._ids = itertools.count(1)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self):
        return iter(list(self._by_token.values()))

    def get(self, token: str | None) -> Session | None:
        """The live session of `token` (marked as seen), or None."""
        s = self._by_token.get(token) if token is not None else None
        if s is not None:
            s.last_seen = time.monotonic()
        return s

    def require(self, token: str) -> Session:
        """The live session of `token`, or the error its client must hear."""
        s = self.get(token)
        if s is not None:
            return s
        why = self._gone.get(token)
        if why == "evicted":
            raise ProtocolError(EVICTED, f"this session was evicted after {self.evict_after_s:g} s without a step, "
                                "to make room for a new client: send 'reset' for a new one")
        detail = {"expired": f"it expired after {self.idle_timeout_s:g} s idle",
                  "closed": "it was closed"}.get(why, "no session has this token (or the server restarted)")
        raise ProtocolError(NO_SESSION, f"no session for this token: {detail}; send 'reset' for a new one")

    def find_request(self, key: bytes) -> Session | None:
        """The session whose last request had digest `key` (a retried `reset` has no token yet)."""
        return next((s for s in self._by_token.values() if s.last_request == key), None)

    def make_room(self, now: float | None = None) -> Session | None:
        """Before a new session: evict the least recently stepped idle one if the table is full
        (returned), or raise `busy` when every session stepped within `evict_after_s`."""
        if len(self._by_token) < self.max_sessions:
            return None
        now = time.monotonic() if now is None else now
        idle = [s for s in self._by_token.values() if now - s.last_stepped >= self.evict_after_s]
        if not idle:
            raise ProtocolError(BUSY, f"the server holds its maximum of {self.max_sessions} sessions, each stepped "
                                f"within the last {self.evict_after_s:g} s; retry later")
        victim = min(idle, key=lambda s: s.last_stepped)
        self._drop(victim, "evicted")
        self.evicted += 1
        return victim

    def open(self, **kwargs) -> Session:
        """A new session with a fresh token (call make_room first)."""
        s = Session(sid=f"s{next(self._ids)}", token=secrets.token_hex(16), **kwargs)
        self._by_token[s.token] = s
        return s

    def replace(self, old: Session, **kwargs) -> Session:
        """A reset of an existing session: a new session under the same token."""
        s = Session(sid=f"s{next(self._ids)}", token=old.token, **kwargs)
        self._by_token[s.token] = s
        return s

    def close(self, token: str | None) -> Session | None:
        s = self._by_token.get(token) if token is not None else None
        if s is not None:
            self._drop(s, "closed")
        return s

    def expire(self, now: float | None = None) -> list[Session]:
        """Drop sessions idle for longer than the timeout; returns them."""
        now = time.monotonic() if now is None else now
        gone = [s for s in self._by_token.values() if now - s.last_seen > self.idle_timeout_s]
        for s in gone:
            self._drop(s, "expired")
        return gone

    def _drop(self, s: Session, why: str) -> None:
        del self._by_token[s.token]
        self._gone[s.token] = why
        while len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)
