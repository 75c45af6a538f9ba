// Node.js client for the magworld server, protocol v2 (docs/protocol.md).
//
// A DEALER socket sends [JSON header, optional binary payload]; the reply is [JSON header,
// optional binary payload]. `reset` returns a session token, which the client puts in every later
// request by itself (the server knows sessions by token, not by socket). Reliability as in the
// Python client (Lazy Pirate): on a timeout the socket is replaced by a new one and the request is
// sent again with the same `id` and token, which the server answers from its stored reply.
"use strict";

const zmq = require("zeromq");
const crypto = require("crypto");

class ServerError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

class MagworldClient {
  constructor(endpoint, { timeoutMs = 10000, retries = 3 } = {}) {
    this.endpoint = endpoint;
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.prefix = crypto.randomBytes(4).toString("hex");
    this.token = null; // the session's credential, from reset
    this.counter = 0;
    this.socket = null;
    this._connect();
  }

  _connect() {
    // A fresh routing id per socket: the session follows the token, not the connection.
    // Sends are bounded too: a socket with no peer to queue to (its connection torn down) waits on send.
    this.socket = new zmq.Dealer({ linger: 0, receiveTimeout: this.timeoutMs, sendTimeout: this.timeoutMs });
    this.socket.connect(this.endpoint);
  }

  // Send one request; resolve to { header, payload } or reject with ServerError / timeout Error.
  async request(header, payload) {
    const id = `node-${this.prefix}-${++this.counter}`;
    const full = { id, ...header };
    if (this.token && header.op !== "info") full.token = this.token;
    const parts = [Buffer.from(JSON.stringify(full))];
    if (payload) parts.push(payload);
    for (let attempt = 0; attempt <= this.retries; attempt++) {
      try {
        await this.socket.send(parts);
        for (;;) {
          const [head, ...rest] = await this.socket.receive();
          const reply = JSON.parse(head.toString("utf8"));
          if (reply.id !== id) continue; // a late reply to an earlier try: already answered
          if (reply.status !== "ok") throw new ServerError(reply.error.code, reply.error.message);
          return { header: reply, payload: rest[0] };
        }
      } catch (e) {
        if (e instanceof ServerError || e.code !== "EAGAIN") throw e;
        this.socket.close();
        this._connect();
      }
    }
    throw new Error(`no reply from ${this.endpoint} to ${header.op} after ${this.retries + 1} tries`);
  }

  async info() {
    return (await this.request({ op: "info" })).header;
  }

  // options: seed, scene, strategy, capacity, memory_bytes, attention_budget, retrieval, revisit, revisit_decode
  async reset(options = {}) {
    const { header } = await this.request({ op: "reset", ...options });
    this.token = header.token;
    return header;
  }

  // Liveness without a model call: { alive, sessions, session } (rejects no_session / evicted when the session is gone).
  async heartbeat() {
    return (await this.request({ op: "heartbeat" })).header;
  }

  // frames: Buffer of n*H*W*3 RGB bytes; shape [n, H, W, 3]; actions/poses: n rows.
  async observe(frames, shape, actions, poses) {
    const header = { op: "observe", shape, dtype: "uint8", actions };
    if (poses) header.poses = poses;
    return (await this.request(header, frames)).header;
  }

  // actions: one [turn, look, forward, strafe] row per frame of the block.
  // Resolves to { frames: Buffer, shape: [B, H, W, 3], poses, timings, revisit, header }.
  async step(actions, { poses, scene } = {}) {
    const header = { op: "step", actions };
    if (poses) header.poses = poses;
    if (scene !== undefined) header.scene = scene;
    const { header: h, payload } = await this.request(header);
    return { frames: payload, shape: h.shape, poses: h.poses, timings: h.timings, revisit: h.revisit, header: h };
  }

  async memory() {
    return (await this.request({ op: "memory" })).header;
  }

  async decodeMemory(slot) {
    const { header, payload } = await this.request({ op: "decode_memory", slot });
    return { frames: payload, shape: header.shape, header };
  }

  async close() {
    if (!this.token) {
      this.socket.close();
      return false;
    }
    const { header } = await this.request({ op: "close" });
    this.socket.close();
    return header.closed;
  }
}

module.exports = { MagworldClient, ServerError };
