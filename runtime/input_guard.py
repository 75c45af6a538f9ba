"""The input guard: a server's public tcp:// endpoint, read frame by frame before libzmq buffers it.

libzmq keeps the parts of a multipart message below the application until the last part has
arrived, and ZMQ_MAXMSGSIZE caps each part, not the message: a peer that speaks ZMTP itself can
send parts with MORE set forever and the server holds all of them. So the server binds its
sockets on a private ipc:// endpoint, and the guard listens on the public one: it relays every
connection byte for byte to the socket (one ipc connection per client connection, so routing ids,
handshakes and replies are the peers' own) and follows the client's frames as they pass
(runtime/zmtp.FrameReader). A connection that sends a message of more than `max_message_bytes`
in all, or more than `max_parts` parts, or a larger command, is closed before the frame that
crosses the line reaches libzmq: libzmq then drops the unfinished message, and it never held
more than `max_message_bytes` of it.

What the guard holds itself is bounded too: per connection and direction at most BUFFER_BYTES
wait to be written; while they wait it reads no more from that side, so a client that does not
read its replies backs up into libzmq's send queue (SNDHWM) as it would without the guard.

The guard reads plain ZMTP 3.x only. Under CURVE the frames, MORE flag included, are encrypted,
so a CURVE server binds its sockets directly (see Server.bind).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
import traceback

from runtime.zmtp import FrameReader

BUFFER_BYTES = 256 * 1024  # per connection and direction: bytes read and not yet written on
POLL_S = 0.2  # how often the thread looks at its stop flag
BACKLOG = 100  # connections waiting to be accepted (libzmq's default ZMQ_BACKLOG)
ACCEPT_PAUSE_S = 1.0  # out of file descriptors: stop accepting for this long, serve the others
UPSTREAM_TIMEOUT_S = 5.0  # connecting to the server's own ipc socket


def tcp_address(endpoint: str) -> tuple[int, tuple]:
    """A tcp:// bind endpoint as libzmq reads one -> (address family, socket address):
    `*` is every IPv4 interface, `[v6]` an IPv6 address, a port of `*` (or 0) a free port.
    Interface names (tcp://eth0:5555) are not resolved here: give an address or a host name."""
    rest = endpoint.split("://", 1)[1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port:
        raise ValueError(f"{endpoint}: a tcp endpoint needs a port (tcp://host:port)")
    port_number = 0 if port in ("*", "!") else int(port)
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], port_number, 0, 0)
    if host == "*":
        return socket.AF_INET, ("0.0.0.0", port_number)
    try:
        infos = socket.getaddrinfo(host, port_number, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ValueError(f"{endpoint}: cannot resolve {host!r} to an IPv4 address ({e})") from None
    return socket.AF_INET, infos[0][4]


class InputGuard:
    """Listens on `endpoint` (tcp://) and relays each connection to the unix socket `upstream`
    (the path of the server socket's ipc:// endpoint), closing those that break the limits.
    `log` takes one line. Start with `start()` (returns the endpoint bound, a `*` port resolved),
    end with `stop()`; `dropped` counts the connections closed for a limit."""

    def __init__(self, endpoint: str, upstream: str, max_message_bytes: int, max_parts: int, log=print):
        self.upstream = upstream
        self.max_message_bytes = max_message_bytes
        self.max_parts = max_parts
        self.log = log
        self.dropped = 0
        family, address = tcp_address(endpoint)
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq: rebind after a restart
        try:
            self._listener.bind(address)
        except OSError as e:
            self._listener.close()
            raise ValueError(f"cannot bind {endpoint}: {e.strerror}") from None
        self._listener.listen(BACKLOG)
        self._listener.setblocking(False)
        host, port = self._listener.getsockname()[:2]
        self.endpoint = f"tcp://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
        self._selector = selectors.DefaultSelector()
        self._relays: set[_Relay] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="input-guard", daemon=True)
        self._accept_after = 0.0

    def start(self) -> str:
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        """Close the listener and every connection (safe to call twice)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for relay in list(self._relays):
            relay.close()
        self._listener.close()
        self._selector.close()

    def _run(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            if self._accept_after and time.monotonic() >= self._accept_after:
                self._accept_after = 0.0
                self._selector.register(self._listener, selectors.EVENT_READ)
            for key, mask in self._selector.select(POLL_S):
                if key.fileobj is self._listener:
                    self._accept()
                    continue
                try:
                    key.data.ready(key.fileobj, mask)
                except Exception as e:  # a bug in one relay closes that connection, not the endpoint
                    self.log(f"input guard: {type(e).__name__} relaying {key.data.peer}: {e}; closed\n"
                             + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
                    key.data.close()

    def _accept(self) -> None:
        while True:
            try:
                client, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log(f"input guard: cannot accept connections ({e.strerror}); pausing {ACCEPT_PAUSE_S:g} s")
                    self._selector.unregister(self._listener)
                    self._accept_after = time.monotonic() + ACCEPT_PAUSE_S
                    return
                continue  # e.g. ECONNABORTED: that client gave up before it was accepted
            try:
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.settimeout(UPSTREAM_TIMEOUT_S)
                server.connect(self.upstream)
            except OSError as e:
                self.log(f"input guard: cannot reach the server socket for {peer[0]}:{peer[1]} ({e}); closed")
                server.close()
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as libzmq does on its tcp sockets
            self._relays.add(_Relay(self, client, server, f"{peer[0]}:{peer[1]}"))


class _Pipe:
    """One direction of a relay: bytes read from `src` wait in `buf` until `dst` takes them."""

    def __init__(self, src: socket.socket, dst: socket.socket, reader: FrameReader | None):
        self.src, self.dst, self.reader = src, dst, reader
        self.buf = bytearray()
        self.eof = False


class _Relay:
    """A client connection and its own connection to the server socket, relayed both ways; the
    client's frames go through a FrameReader on the way in."""

    def __init__(self, guard: InputGuard, client: socket.socket, server: socket.socket, peer: str):
        self.guard, self.peer = guard, peer
        reader = FrameReader(guard.max_message_bytes, guard.max_parts)
        self.inbound, self.outbound = _Pipe(client, server, reader), _Pipe(server, client, None)
        self.reading = {client: self.inbound, server: self.outbound}  # socket -> the pipe it fills
        self.writing = {server: self.inbound, client: self.outbound}  # socket -> the pipe it drains
        self.events = {client: 0, server: 0}  # what the selector waits for on each socket
        for sock in (client, server):
            sock.setblocking(False)
        self._watch()

    def ready(self, sock: socket.socket, mask: int) -> None:
        if not self.events:  # closed by an earlier event of the same select
            return
        try:
            if mask & selectors.EVENT_READ:
                self._read(self.reading[sock])
            if mask & selectors.EVENT_WRITE and self.events:
                self._write(self.writing[sock])
        except OSError:  # reset or broken pipe on either side: that connection is over
            self.close()
        if self.events:  # not closed
            if any(p.eof and not p.buf for p in (self.inbound, self.outbound)):
                self.close()  # one side has left and everything it sent has been passed on
            else:
                self._watch()

    def _read(self, pipe: _Pipe) -> None:
        data = pipe.src.recv(BUFFER_BYTES - len(pipe.buf))
        if not data:
            pipe.eof = True
            return
        if pipe.reader is not None:
            why = pipe.reader.feed(data)
            if why is not None:
                self.guard.dropped += 1
                self.guard.log(f"input guard: closed the connection from {self.peer}: {why}")
                self.close()
                return
        pipe.buf += data
        self._write(pipe)  # at once: most of the time the other side takes it all

    def _write(self, pipe: _Pipe) -> None:
        if pipe.buf:
            try:
                sent = pipe.dst.send(pipe.buf)
            except BlockingIOError:
                return
            del pipe.buf[:sent]

    def _watch(self) -> None:
        """Wait to read a side while its pipe has room, to write it while its pipe to it holds data."""
        for sock in self.events:
            want = ((selectors.EVENT_READ if not self.reading[sock].eof
                     and len(self.reading[sock].buf) < BUFFER_BYTES else 0)
                    | (selectors.EVENT_WRITE if self.writing[sock].buf else 0))
            have = self.events[sock]
            if want == have:
                continue
            if not have:
                self.guard._selector.register(sock, want, self)
            elif not want:
                self.guard._selector.unregister(sock)
            else:
                self.guard._selector.modify(sock, want, self)
            self.events[sock] = want

    def close(self) -> None:
        for sock, have in self.events.items():
            if have:
                self.guard._selector.unregister(sock)
            sock.close()
        self.events = {}
        self.guard._relays.discard(self)
