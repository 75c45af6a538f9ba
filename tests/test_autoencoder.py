"""The frame autoencoder: shapes, padding, latent normalisation, and that training improves it."""

import pytest
import torch

from worldmodel.autoencoder import Autoencoder, frames_to_uint8
from worldmodel.config import AutoencoderConfig


def frames(n=2, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def test_encode_decode_shapes_follow_the_config(tiny):
    ae = Autoencoder(tiny.autoencoder).eval()
    a = tiny.autoencoder
    z = ae.encode(frames(h=a.frame_height, w=a.frame_width))
    assert z.shape == (2, a.latent_channels, a.frame_height // a.downsample, a.frame_width // a.downsample)
    assert ae.decode(z).shape == (2, 3, a.frame_height, a.frame_width)


def test_non_divisible_frames_are_padded_and_cropped_back(tiny):
    ae = Autoencoder(tiny.autoencoder).eval()
    x = frames(h=20, w=30)  # 20/8 and 30/8 are not whole
    z = ae.encode(x)
    assert z.shape[-2:] == (3, 4)  # ceil(20/8), ceil(30/8)
    assert ae.decode(z, frame_size=(20, 30)).shape == (2, 3, 20, 30)
    out = ae(x)
    assert out.reconstruction.shape == x.shape


def test_doom_sized_latents_are_20_by_15():
    cfg = AutoencoderConfig(base_channels=8, max_channels=16)  # 160x120, d=8; few channels for speed
    ae = Autoencoder(cfg).eval()
    with torch.no_grad():
        z = ae.encode(torch.zeros(1, 3, 120, 160, dtype=torch.uint8))
        assert z.shape == (1, cfg.latent_channels, 15, 20)
        assert ae.decode(z).shape == (1, 3, 120, 160)


def test_uint8_input_means_the_same_as_float_in_minus_one_to_one(tiny):
    ae = Autoencoder(tiny.autoencoder).eval()
    x = frames_to_uint8(frames())
    as_float = x.float() / 127.5 - 1
    assert torch.allclose(ae.encode(x), ae.encode(as_float))


def test_latent_shift_and_scale_normalise_and_decode_inverts_them(tiny):
    ae = Autoencoder(tiny.autoencoder).eval()
    x = frames()
    mean, _ = ae.posterior(x)
    ae.latent_shift.fill_(0.3)
    ae.latent_scale.fill_(2.0)
    z = ae.encode(x)
    assert torch.allclose(z, (mean - 0.3) / 2.0)
    assert torch.allclose(ae.denormalize(z), mean, atol=1e-6)
    assert torch.allclose(ae.decode(z), ae.decoder(mean)[..., :24, :32], atol=1e-5)


def test_kl_is_zero_for_a_standard_normal_posterior_and_positive_otherwise(tiny):
    ae = Autoencoder(tiny.autoencoder)
    with torch.no_grad():
        ae.encoder.conv_out.weight.zero_()
        ae.encoder.conv_out.bias.zero_()  # posterior N(0, 1) everywhere
    assert ae(frames()).kl.item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        ae.encoder.conv_out.bias.fill_(0.5)
    assert ae(frames()).kl.item() > 0.01


def test_wrong_shapes_are_refused_in_user_terms(tiny):
    ae = Autoencoder(tiny.autoencoder)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        ae.encode(torch.zeros(2, 24, 32, 3))
    with pytest.raises(ValueError, match="latents"):
        ae.decode(torch.zeros(2, 7, 3, 4))
    with pytest.raises(ValueError, match="power of two"):
        Autoencoder(AutoencoderConfig(downsample=6))


def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny):
    torch.manual_seed(0)
    ae = Autoencoder(tiny.autoencoder)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    x = frames(n=4)

    def loss():
        out = ae(x, sample=False)
        return (out.reconstruction - x).abs().mean() + tiny.autoencoder.kl_weight * out.kl

    before = loss().item()
    for _ in range(15):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.9 * before


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv_equals_upsampling_then_convolving(channels_last):
    import torch.nn.functional as F

    from worldmodel.autoencoder import upsample_conv

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(4, 6, 3, 3, generator=g), torch.randn(4, generator=g)
    want = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)
    torch.testing.assert_close(upsample_conv(x, w, b), want, rtol=1e-5, atol=1e-5)


def test_the_cpu_decoder_gives_what_the_plain_one_gives():
    """Without autograd on CPU the decoder upsamples with upsample_conv; with autograd (training)
    it upsamples, then convolves: both decode the same frames."""
    cfg = AutoencoderConfig(base_channels=8, max_channels=16)
    torch.manual_seed(0)
    ae = Autoencoder(cfg).eval()
    z = torch.randn(3, cfg.latent_channels, 15, 20)
    with torch.no_grad():
        fast = ae.decode(z)
    plain = ae.decode(z).detach()
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
