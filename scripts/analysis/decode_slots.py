"""Which network should read a memory slot back to pixels? (docs/results.md, session 10)

For 8 held-out clips: observe 3 true blocks with `window` and with `mag` memory, decode every held
slot (worldmodel.rollout.decode_slot_latents) once with the memory model and once with the
generator, and print the mean PSNR of the slot's frame against the true frame at its index.

    python scripts/analysis/decode_slots.py --checkpoint checkpoints/doom-gpu --data HELDOUT
"""

import argparse
import itertools

import numpy as np
import torch

from worldmodel.bundle import WorldModel
from worldmodel.data.dataset import ClipDataset
from worldmodel.metrics import psnr
from worldmodel.rollout import decode_slot_latents


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/doom-gpu")
    ap.add_argument("--data", required=True, help="held-out dataset (magworld data record ... --seed 2)")
    ap.add_argument("--clips", type=int, default=8)
    args = ap.parse_args()
    model = WorldModel.load(args.checkpoint, "cpu")
    bf = model.config.model.block_frames
    clips = ClipDataset(args.data, 3 * bf, block_frames=bf, split="heldout", seed=0)
    scores: dict[tuple[str, str], list[float]] = {}
    for clip in itertools.islice(iter(clips), 0, 10 * args.clips, 10):
        frames, actions = clip["frames"][None], clip["actions"][None]
        latents = model.encode(frames)
        for strategy in ("window", "mag"):
            roll = model.rollout(strategy)
            for j in range(0, 3 * bf, bf):
                roll.observe(latents[:, j:j + bf], actions[:, j:j + bf])
            for reader in ("memory model", "generator"):
                # decode_slot_latents reads with the writer; make both networks the chosen reader
                saved = roll.generator, roll.memory_model
                net = model.memory_model if reader == "memory model" else model.generator
                roll.generator = roll.memory_model = net
                for slot in roll.memory.used_slots().tolist():
                    rec = model.decode(decode_slot_latents(roll, slot, torch.Generator().manual_seed(0)))[0, -1]
                    truth = frames[0, int(roll.memory.frame[slot])]
                    scores.setdefault((strategy, reader), []).append(
                        float(psnr(rec.permute(2, 0, 1), truth.permute(2, 0, 1))))
                roll.generator, roll.memory_model = saved
    for (strategy, reader), v in scores.items():
        print(f"{strategy:7s} slots read by the {reader:12s}: {np.mean(v):.2f} dB over {len(v)} slots")


if __name__ == "__main__":
    main()
