"""PSNR and SSIM behave as their standard definitions say."""

import math

import numpy as np
import pytest
import torch

from worldmodel.metrics import psnr, ssim


def images(seed=0, shape=(2, 3, 24, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    x = images()
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_known_mse_gives_known_psnr():
    x = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    y = x + 0.1  # MSE = 0.01 on a peak of 1 -> 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-6)


def test_uint8_images_are_measured_on_the_255_scale():
    x = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    y = x + 10
    expected = 10 * math.log10(255**2 / 100)
    assert psnr(x, y).item() == pytest.approx(expected, abs=1e-6)
    assert ssim(x, x).item() == pytest.approx(1.0)


def test_ssim_is_symmetric_below_one_for_noise_and_batched():
    x = images(0)
    noisy = (x + 0.2 * images(1)).clamp(0, 1)
    s = ssim(x, noisy)
    assert s.shape == (2,)
    assert torch.allclose(s, ssim(noisy, x))
    assert (s < 0.99).all() and (s > -1).all()
    # More noise, less similar.
    noisier = (x + 0.5 * images(1)).clamp(0, 1)
    assert (ssim(x, noisier) < s).all()


def test_leading_dimensions_are_kept():
    x = images(shape=(2, 4, 3, 24, 32))
    assert psnr(x, x * 0.9).shape == (2, 4)
    assert ssim(x, x * 0.9).shape == (2, 4)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        psnr(images(), images(shape=(2, 3, 24, 30)))
    with pytest.raises(TypeError, match="uint8"):
        ssim(images(), (images() * 255).to(torch.uint8))


def test_sharpness_is_zero_for_flat_images_and_falls_with_blur():
    from worldmodel.metrics import sharpness
    import torch.nn.functional as F

    flat = torch.full((2, 3, 24, 32), 0.4)
    assert torch.allclose(sharpness(flat), torch.zeros(2, dtype=torch.float64))
    x = images()
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1)
    assert (sharpness(blurred) < 0.5 * sharpness(x)).all()
    # uint8 and float inputs are on one scale
    u = (x * 255).round().to(torch.uint8)
    assert torch.allclose(sharpness(u), sharpness(u.float() / 255), rtol=1e-6)


def test_long_inputs_are_measured_in_chunks_with_the_same_results(monkeypatch):
    from worldmodel import metrics
    from worldmodel.eval import drift

    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (2, 5, 3, 12, 14), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (2, 5, 3, 12, 14), dtype=torch.uint8, generator=g)
    whole = metrics.psnr(a, b), metrics.ssim(a, b), metrics.sharpness(a)
    frames = a.flatten(0, 1).movedim(1, -1).numpy()
    whole_drift = drift.sharpness(frames), drift.colour_stats(frames)
    monkeypatch.setattr(metrics, "CHUNK", 3)  # 10 images: chunks of 3, 3, 3, 1
    monkeypatch.setattr(drift, "CHUNK", 3)
    for got, want in zip((metrics.psnr(a, b), metrics.ssim(a, b), metrics.sharpness(a)), whole):
        assert got.shape == (2, 5)
        torch.testing.assert_close(got, want)
    for got, want in zip((drift.sharpness(frames), drift.colour_stats(frames)), whole_drift):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(a, b[:1])
