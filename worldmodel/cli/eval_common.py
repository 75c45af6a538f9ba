"""Shared bits of the eval actions: device choice, loading, clips, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_model_args(p, data=True):
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory (e.g. checkpoints/doom-small)")
    if data:
        p.add_argument("--data", required=True, help="dataset directory")
        p.add_argument("--split", default="heldout", help="dataset split (default: heldout)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")


def device_of(args):
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def clips(args, clip_frames: int, block_frames: int):
    from worldmodel.data.dataset import ClipDataset

    return ClipDataset(args.data, clip_frames, block_frames=block_frames, split=args.split, seed=args.seed)


def emit(args, result: dict) -> int:
    from worldmodel.machine import describe

    result = {**result, "machine": describe(device_of(args))}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    sys.stdout.flush()
    return 0
