"""`evaluate_autoencoder` reports the sharpness of reconstructions beside that of the true frames."""

import pytest
import torch.nn.functional as F

from worldmodel.autoencoder import frames_to_float
from worldmodel.eval.reconstruction import evaluate_autoencoder
from worldmodel.train.synthetic import SyntheticClips


class PixelCodec:
    """A stand-in autoencoder whose latent is the frame itself; `blur` smooths on decoding."""

    def __init__(self, blur: bool):
        self.blur = blur

    def encode(self, frames):
        return frames_to_float(frames)

    def decode(self, latents, frame_size=None):
        if not self.blur:
            return latents
        return F.avg_pool2d(latents, 3, stride=1, padding=1, count_include_pad=False)


def clips():
    return SyntheticClips(3, 24, 32, num_clips=4, seed=0)


def test_a_perfect_decoder_is_exactly_as_sharp_as_the_truth():
    r = evaluate_autoencoder(PixelCodec(blur=False), clips(), max_frames=6)
    assert r["sharpness_true"] > 0
    assert r["sharpness_reconstruction"] == r["sharpness_true"] and r["sharpness_ratio"] == 1.0


def test_a_blurring_decoder_scores_a_sharpness_ratio_below_one():
    sharp = evaluate_autoencoder(PixelCodec(blur=False), clips(), max_frames=6)
    r = evaluate_autoencoder(PixelCodec(blur=True), clips(), max_frames=6)
    assert r["sharpness_true"] == sharp["sharpness_true"]  # the same true frames
    assert r["sharpness_ratio"] < 0.8
    assert r["sharpness_ratio"] == pytest.approx(r["sharpness_reconstruction"] / r["sharpness_true"])
