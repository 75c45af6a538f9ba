"""ZMTP 3.x framing (rfc.zeromq.org/spec/23): as much of the wire format as the input guard reads
and the raw test peer writes.

A connection starts with a 64-byte greeting from each side (signature, version, security
mechanism). Then each side sends frames: a flags byte (MORE, LONG, COMMAND), the body size (one
byte, or eight bytes big-endian when LONG is set) and the body. A message is its frames up to and
including the first without MORE; a command (the handshake's READY, heartbeat PINGs) is a single
frame of its own, between messages.
"""

from __future__ import annotations

GREETING_BYTES = 64
MORE, LONG, COMMAND = 0x01, 0x02, 0x04  # the frame flags


def greeting(mechanism: bytes = b"NULL", minor: int = 0) -> bytes:
    """The 64 bytes a ZMTP 3.`minor` peer opens with (as a client: as-server is 0)."""
    return b"\xff" + bytes(8) + b"\x7f" + bytes([3, minor]) + mechanism.ljust(20, b"\x00") + bytes(32)


def frame_header(size: int, more: bool = False, command: bool = False) -> bytes:
    """The flags and size of a frame with a body of `size` bytes (short form below 256)."""
    flags = (MORE if more else 0) | (COMMAND if command else 0)
    if size < 256:
        return bytes([flags, size])
    return bytes([flags | LONG]) + size.to_bytes(8, "big")


def command(name: bytes, properties: dict[str, bytes]) -> bytes:
    """A whole command frame, e.g. the NULL mechanism's READY with its `Socket-Type` property."""
    body = bytes([len(name)]) + name
    for key, value in properties.items():
        body += bytes([len(key)]) + key.encode() + len(value).to_bytes(4, "big") + value
    return frame_header(len(body), command=True) + body


class FrameReader:
    """Follows one direction of a ZMTP 3.x connection as its bytes arrive, keeping none of them:
    only the greeting (64 bytes) and the header of the frame being read.

    `feed` checks each frame when its header is complete, that is before any of its body has
    been passed on: a message may have at most `max_parts` frames and `max_message_bytes` bytes of
    bodies in all, a command at most `max_message_bytes` bytes. A stream that is not ZMTP 3.x, or
    that breaks a limit, gets the reason back; the reader is then spent and the connection should
    be closed without passing that data on.
    """

    def __init__(self, max_message_bytes: int, max_parts: int):
        self.max_message_bytes = max_message_bytes
        self.max_parts = max_parts
        self.message_bytes = 0  # bodies of the unfinished message so far (the frames already checked)
        self.message_parts = 0
        self._greeting = bytearray()
        self._head = bytearray()  # the header of the next frame, as much of it as has arrived
        self._body_left = 0  # bytes of the current frame's body still to come
        self._broken: str | None = None

    def feed(self, data: bytes) -> str | None:
        """Take the next bytes of the stream. None while it keeps the limits, else why it does not."""
        i, n = 0, len(data)
        while i < n and self._broken is None:
            if len(self._greeting) < GREETING_BYTES:
                take = min(GREETING_BYTES - len(self._greeting), n - i)
                self._greeting += data[i:i + take]
                i += take
                self._broken = self._check_greeting()
            elif self._body_left:
                take = min(self._body_left, n - i)
                self._body_left -= take
                i += take
            else:
                need = 9 if self._head and self._head[0] & LONG else (2 if self._head else 1)
                take = min(need - len(self._head), n - i)
                self._head += data[i:i + take]
                i += take
                if len(self._head) == need and need > 1:
                    self._broken = self._check_frame()
        return self._broken

    def _check_greeting(self) -> str | None:
        g = self._greeting
        # libzmq's own test for a ZMTP 2.0+ signature (byte 0, bit 0 of byte 9), then the major version.
        if g[0] != 0xFF or len(g) >= 10 and not g[9] & 1:
            return "not a ZMTP 3 greeting (an older ZMTP, or not ZeroMQ at all)"
        if len(g) >= 11 and g[10] < 3:
            return f"ZMTP major version {g[10]} (3 or later is served)"
        return None

    def _check_frame(self) -> str | None:
        flags, size = self._head[0], int.from_bytes(self._head[1:], "big")
        self._head.clear()
        self._body_left = size
        if flags & COMMAND:
            if size > self.max_message_bytes:
                return f"a command of {size} bytes (at most {self.max_message_bytes})"
            return None
        if self.message_parts + 1 > self.max_parts:
            return f"a message of more than {self.max_parts} parts ({self.message_bytes} bytes so far)"
        if self.message_bytes + size > self.max_message_bytes:
            return (f"a message of more than {self.max_message_bytes} bytes ({self.message_bytes} bytes in "
                    f"{self.message_parts} parts so far, then a part of {size})")
        self.message_parts += 1
        self.message_bytes += size
        if not flags & MORE:  # the last part: the next frame starts a new message
            self.message_parts = self.message_bytes = 0
        return None
