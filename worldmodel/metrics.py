"""Image metrics: PSNR and SSIM (against a reference) and sharpness (of one image), batched, in torch.

Images are `[..., C, H, W]`: uint8 in [0, 255], or float in [0, 1]. Both arguments must have the
same shape and kind; results have the leading shape `[...]` (one value per image), float64.
LPIPS is not here: it needs pretrained network weights that cannot be downloaded offline.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Images per pass. The metrics work in float64: a 10-minute rollout (10,500 frames of 160x120)
# in one pass took 24 GB and was killed by the kernel; in chunks of 256 it takes ~0.2 GB.
CHUNK = 256


def per_chunk(fn):
    """Run a metric of images [..., C, H, W] (all arguments the same shape) over at most CHUNK
    images at a time; the result has the leading shape [...] as if run at once."""
    @functools.wraps(fn)
    def run(*images: torch.Tensor) -> torch.Tensor:
        first = images[0]
        if first.dim() < 3 or any(t.shape != first.shape for t in images):
            return fn(*images)  # it says what is wrong
        lead = first.shape[:-3]
        flat = [t.reshape(-1, *t.shape[-3:]) for t in images]
        if flat[0].shape[0] <= CHUNK:
            return fn(*images)
        parts = [fn(*(t[i:i + CHUNK] for t in flat)) for i in range(0, flat[0].shape[0], CHUNK)]
        return torch.cat(parts).reshape(lead)
    return run

# SSIM as defined by Wang et al. (2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
# K2 = 0.03, statistics over the 'valid' part of the image, averaged over channels and positions.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_unit(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if (a.dtype == torch.uint8) != (b.dtype == torch.uint8):
        raise TypeError(f"compare uint8 with uint8 and float with float, got {a.dtype} and {b.dtype}")
    if a.dim() < 3:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(a.shape)}")
    if a.dtype == torch.uint8:
        return a.double() / 255.0, b.double() / 255.0
    return a.double(), b.double()


@per_chunk
def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak = 1 on the [0, 1] scale); +inf where images are equal."""
    a, b = _to_unit(a, b)
    mse = (a - b).square().flatten(-3).mean(-1)
    return 10.0 * torch.log10(1.0 / mse)  # mse = 0 gives +inf, as it should


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


@per_chunk
def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Gaussian window), in [-1, 1]; 1 where images are equal.

    Images smaller than the 11-pixel window use a window as large as the smaller side allows.
    """
    a, b = _to_unit(a, b)
    lead = a.shape[:-3]
    c, h, w = a.shape[-3:]
    x = a.reshape(-1, c, h, w)
    y = b.reshape(-1, c, h, w)
    size = min(SSIM_WINDOW, h, w)
    size -= 1 - size % 2  # odd, so the window has a centre
    g = _gaussian_window(size, SSIM_SIGMA, x.dtype, x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable Gaussian, depthwise over channels, 'valid' borders.
        t = F.conv2d(t, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
        return F.conv2d(t, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)

    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range is 1
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(-1).reshape(lead)


# Sharpness: the variance of the Laplacian of the grey image (on the 0..255 scale), per image.
# PSNR rewards blur (the mean of the possible futures scores well); this says how much fine detail
# a frame has, so a blurry prediction shows up beside a good PSNR. Compare it with the same
# figure of the true frames: a sharp model is near 1x of the truth, a blurry one far below.
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
_GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


@per_chunk
def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Laplacian variance of RGB images [..., 3, H, W] (uint8, or float in [0, 1]) -> [...] float64."""
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"expected RGB images [..., 3, H, W], got shape {tuple(images.shape)}")
    x = images.double() if images.dtype == torch.uint8 else images.double() * 255.0
    lead = x.shape[:-3]
    h, w = x.shape[-2:]
    grey = (x.reshape(-1, 3, h, w) * _GREY.to(x.device)[None, :, None, None]).sum(1, keepdim=True)
    lap = F.conv2d(grey, _LAPLACIAN.to(x.device)[None, None])  # 'valid' borders
    return lap.flatten(1).var(-1, unbiased=False).reshape(lead)
