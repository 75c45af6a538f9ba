"""A hand-written ZeroMQ peer: ZMTP 3.0 on a plain TCP socket, NULL mechanism, as a DEALER.

It sends frame by frame what it is told, so it can send what no libzmq socket sends: a multipart
message that never ends (every frame with MORE set), which libzmq would buffer below the
application until the last part. The hostile-client tests and `magworld bench soak` use it
against the input guard (runtime/input_guard.py).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from runtime import zmtp


class RawPeer:
    """A connected DEALER peer that has finished the handshake (greetings, then READY both ways)."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0):
        url = urlsplit(endpoint)
        if url.scheme != "tcp":
            raise ValueError(f"RawPeer speaks ZMTP over tcp://, not {endpoint}")
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
        self.sock.sendall(zmtp.greeting())
        peer = self._recv_exact(zmtp.GREETING_BYTES)
        if peer[0] != 0xFF or peer[10] < 3:
            raise ConnectionError(f"{endpoint} did not answer with a ZMTP 3 greeting: {peer[:12].hex()}")
        self.sock.sendall(zmtp.command(b"READY", {"Socket-Type": b"DEALER"}))
        flags, body = self.recv_frame()
        if not flags & zmtp.COMMAND or not body.startswith(b"\x05READY"):
            raise ConnectionError(f"{endpoint} did not send READY (flags {flags:#x}, {body[:16]!r})")

    def _recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            out += chunk
        return bytes(out)

    def send_frame(self, body: bytes, more: bool = False) -> None:
        self.sock.sendall(zmtp.frame_header(len(body), more=more) + body)

    def recv_frame(self) -> tuple[int, bytes]:
        """The next frame: (flags, body)."""
        flags = self._recv_exact(1)[0]
        size = int.from_bytes(self._recv_exact(8 if flags & zmtp.LONG else 1), "big")
        return flags, self._recv_exact(size)

    def send_multipart(self, parts: list[bytes]) -> None:
        for k, part in enumerate(parts):
            self.send_frame(part, more=k < len(parts) - 1)

    def recv_multipart(self) -> list[bytes]:
        parts = []
        while True:
            flags, body = self.recv_frame()
            if flags & zmtp.COMMAND:  # a PING or the like between messages
                continue
            parts.append(body)
            if not flags & zmtp.MORE:
                return parts

    def send_endless_message(self, total_bytes: int, part_bytes: int = 64 * 1024) -> int:
        """Send parts of `part_bytes` zero bytes, every one with MORE set, until `total_bytes` are
        sent or the server closes the connection (or stops reading it for the socket's timeout).
        Returns the bytes of parts sent (handed to the kernel: up to its socket buffers more than
        the server has read)."""
        part = zmtp.frame_header(part_bytes, more=True) + bytes(part_bytes)
        sent = 0
        try:
            while sent < total_bytes:
                self.sock.sendall(part)
                sent += part_bytes
        except OSError:  # reset, broken pipe or timeout: the server is done with this connection
            pass
        return sent

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
