"""Autoencoder reconstruction quality on recorded clips: PSNR and SSIM per frame, on uint8 pixels,
and sharpness (Laplacian variance) of the reconstructions beside that of the true frames: PSNR
rewards blur, so a decoder is judged by both (a ratio near 1 is as sharp as the engine).

LPIPS is not reported: it needs pretrained AlexNet/VGG weights, which cannot be downloaded here.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from worldmodel.autoencoder import Autoencoder, channels_first, frames_to_uint8
from worldmodel.metrics import psnr, sharpness, ssim


@torch.no_grad()
def evaluate_autoencoder(
    autoencoder: Autoencoder, clips: Iterable[dict[str, Any]], max_frames: int = 1024, batch_frames: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Encode and decode up to `max_frames` frames of `clips` (dicts with frames uint8 [L, H, W, 3]).

    Returns frame count, mean/median/min PSNR (dB), mean/min SSIM, and the mean sharpness of the
    reconstructions and of the true frames with their ratio, computed on the decoded frames
    rounded to uint8 (what a player sees).
    """
    psnrs, ssims, sharp_rec, sharp_true = [], [], [], []
    pending: list[torch.Tensor] = []
    n = 0

    def flush():
        x = channels_first(torch.cat(pending).to(device))  # uint8 [N, 3, H, W]
        rec = frames_to_uint8(autoencoder.decode(autoencoder.encode(x), frame_size=tuple(x.shape[-2:])))
        psnrs.append(psnr(rec, x).cpu())
        ssims.append(ssim(rec, x).cpu())
        sharp_rec.append(sharpness(rec).cpu())
        sharp_true.append(sharpness(x).cpu())
        pending.clear()

    for clip in clips:
        frames = torch.as_tensor(clip["frames"])[: max_frames - n]
        pending.append(frames)
        n += frames.shape[0]
        if sum(p.shape[0] for p in pending) >= batch_frames:
            flush()
        if n >= max_frames:
            break
    if pending:
        flush()
    if n == 0:
        raise ValueError("no frames to evaluate: the dataset split is empty")
    p, s = torch.cat(psnrs), torch.cat(ssims)
    sharp_rec_mean, sharp_true_mean = float(torch.cat(sharp_rec).mean()), float(torch.cat(sharp_true).mean())
    finite = p[torch.isfinite(p)]
    return {
        "frames": n,
        "psnr_mean": float(finite.mean()) if finite.numel() else float("inf"),
        "psnr_median": float(p.median()),
        "psnr_min": float(p.min()),
        "ssim_mean": float(s.mean()),
        "ssim_min": float(s.min()),
        "sharpness_reconstruction": sharp_rec_mean,
        "sharpness_true": sharp_true_mean,
        # of the means (frame-wise ratios blow up on flat frames); nan when the truth is flat
        "sharpness_ratio": sharp_rec_mean / sharp_true_mean if sharp_true_mean > 0 else float("nan"),
        "lpips": None,
        "lpips_note": "not computed: LPIPS needs pretrained network weights that are not available offline",
    }
