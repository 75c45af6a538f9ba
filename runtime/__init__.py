"""magworld runtime: a server process that keeps each client's rolling compressed KV memory and
serves generated frames over ZeroMQ (protocol: docs/protocol.md)."""
