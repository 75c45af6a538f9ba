"""`magworld eval autoencoder`: reconstruction PSNR / SSIM and sharpness of a trained autoencoder on a split."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub):
    p = sub.add_parser("autoencoder", help="reconstruction PSNR/SSIM and sharpness of an autoencoder checkpoint",
                       description="magworld eval autoencoder: encode and decode frames of a split; report PSNR, SSIM "
                       "and the sharpness (Laplacian variance) of the reconstructions against the true frames.")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory or training run directory")
    p.add_argument("--data", required=True, help="dataset directory (or 'synthetic')")
    p.add_argument("--split", default="heldout", help="dataset split (default: heldout)")
    p.add_argument("--max-frames", type=int, default=1024, help="frames to evaluate (default 1024)")
    p.add_argument("--batch-frames", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--json", type=Path, default=None, help="write the results here (else JSON goes to stdout)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from worldmodel.autoencoder import load_autoencoder
    from worldmodel.cli.train import dataset_factory
    from worldmodel.eval.reconstruction import evaluate_autoencoder
    from worldmodel.train import checkpoint as ckpt
    from worldmodel.train.distributed import DistInfo

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    directory = ckpt.resolve_checkpoint(args.checkpoint)
    config = ckpt.load_config(directory)
    model = load_autoencoder(directory, device)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    clips = dataset_factory(args.data, args.split, config, info)(config.model.block_frames, args.seed)
    result = {"checkpoint": str(directory), "data": str(args.data), "split": args.split,
              **evaluate_autoencoder(model, clips, args.max_frames, args.batch_frames, device)}
    table = (f"{'split':<10} {'frames':>7} {'PSNR dB':>8} {'SSIM':>7} {'sharp rec':>10} {'sharp true':>10} {'ratio':>6}\n"
             f"{args.split:<10} {result['frames']:>7} {result['psnr_mean']:>8.2f} {result['ssim_mean']:>7.4f} "
             f"{result['sharpness_reconstruction']:>10.1f} {result['sharpness_true']:>10.1f} "
             f"{result['sharpness_ratio']:>6.3f}\n"
             "(sharpness: Laplacian variance of the frames; ratio = reconstructions / true frames, 1 = as sharp)\n"
             "(LPIPS not reported: its pretrained weights are not available offline)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(table)
    else:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    return 0
