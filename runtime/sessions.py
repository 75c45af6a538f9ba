"""The session table: one session per client identity, at most `max_sessions`, idle ones expire.

A session owns an EngineSession (generator state + KV memory), the camera pose, the revisit
checker, and the last reply it sent (so that a retried request is answered, not run twice).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from runtime.backends.base import EngineSession
from runtime.pose_tracker import PoseTracker
from runtime.protocol import BUSY, ProtocolError
from runtime.revisit import RevisitChecker


@dataclass
class Session:
    sid: str  # short public name: PUB topic, log lines
    identity: bytes  # ZeroMQ routing id of the client
    engine: EngineSession
    tracker: PoseTracker
    revisit: RevisitChecker | None
    scene: int | None
    strategy: str
    attention_budget: int
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    blocks: int = 0
    last_request: bytes | None = None  # digest of the last request that carried an id
    last_reply: list | None = None


class SessionTable:
    def __init__(self, max_sessions: int, idle_timeout_s: float):
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._by_identity: dict[bytes, Session] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._by_identity)

    def __iter__(self):
        return iter(list(self._by_identity.values()))

    def get(self, identity: bytes) -> Session | None:
        s = self._by_identity.get(identity)
        if s is not None:
            s.last_seen = time.monotonic()
        return s

    def check_room(self, identity: bytes) -> None:
        """Raise `busy` if opening a session for `identity` would exceed the maximum."""
        if identity not in self._by_identity and len(self._by_identity) >= self.max_sessions:
            raise ProtocolError(BUSY, f"the server holds its maximum of {self.max_sessions} sessions; retry later")

    def open(self, identity: bytes, **kwargs) -> tuple[Session, Session | None]:
        """A new session for `identity`, replacing its old one (returned) if any."""
        self.check_room(identity)
        old = self._by_identity.pop(identity, None)
        s = Session(sid=f"s{next(self._ids)}", identity=identity, **kwargs)
        self._by_identity[identity] = s
        return s, old

    def close(self, identity: bytes) -> Session | None:
        return self._by_identity.pop(identity, None)

    def expire(self, now: float | None = None) -> list[Session]:
        """Drop sessions idle for longer than the timeout; returns them."""
        now = time.monotonic() if now is None else now
        gone = [s for s in self._by_identity.values() if now - s.last_seen > self.idle_timeout_s]
        for s in gone:
            del self._by_identity[s.identity]
        return gone
