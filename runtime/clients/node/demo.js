// A whole session against a running server; prints one JSON summary line.
// Usage: node demo.js tcp://127.0.0.1:5555 [blocks]
"use strict";

const { MagworldClient, ServerError } = require("./client");

async function main() {
  const endpoint = process.argv[2] || "tcp://127.0.0.1:5555";
  const blocks = Number(process.argv[3] || 4);
  const client = new MagworldClient(endpoint, { timeoutMs: 20000 });
  const info = await client.info();
  const [h, w] = info.frame_shape;
  const B = info.block_size;
  const reset = await client.reset({ seed: 5 });

  // Start frames from "the engine": one block of grey frames, standing still.
  const still = Array.from({ length: B }, () => [0, 0, 0, 0]);
  const grey = Buffer.alloc(B * h * w * 3, 128);
  const observed = await client.observe(grey, [B, h, w, 3], still);

  const steps = [];
  for (let i = 0; i < blocks; i++) {
    const turn = Array.from({ length: B }, () => [5.625, 0, 0, 0]);
    const block = await client.step(turn);
    if (block.frames.length !== block.shape.reduce((a, b) => a * b, 1)) throw new Error("frame bytes != shape");
    steps.push({ first_frame: block.header.first_frame, shape: block.shape, angle: block.poses[B - 1][3] });
  }
  const memory = await client.memory();
  const decoded = await client.decodeMemory(memory.slots[0].slot);
  let badActionCode = null;
  try {
    await client.step([[1000, 0, 0, 0]]);
  } catch (e) {
    if (!(e instanceof ServerError)) throw e;
    badActionCode = e.code;
  }
  const closed = await client.close();
  console.log(JSON.stringify({
    protocol: info.protocol, block_size: B, frame_shape: info.frame_shape, session: reset.session,
    observed_next_frame: observed.next_frame, steps, memory_used: memory.used, memory_capacity: memory.capacity,
    decoded_shape: decoded.shape, decoded_bytes: decoded.frames.length, bad_action_code: badActionCode, closed,
  }));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
