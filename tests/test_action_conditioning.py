"""The action reaches the tokens directly: a fresh model's output depends on the keys from step 0,
unless the action layers are zero-initialised (the wan-1.3b conversion path), and the teacher's
recipe options (context noise, logit-normal levels) do what they say."""

import torch

from worldmodel.config import apply_overrides, preset
from worldmodel.model import CausalDiT


def _outputs(cfg, seed=0):
    torch.manual_seed(seed)
    net = CausalDiT(cfg.model).eval()
    with torch.no_grad():  # open the adaLN-zero gates and the head, as training soon does
        for block in net.blocks:
            block.modulation.normal_(0, 0.5)
        net.head.weight.normal_(0, 0.1)
    m = cfg.model
    x = torch.randn(2, 3, m.latent_channels, m.latent_height, m.latent_width)
    t = torch.full((2, 3), 500.0)
    left = torch.zeros(2, 3, m.action_dim)
    left[..., 0] = 11.25
    right = -left
    pos = torch.arange(3)
    with torch.no_grad():
        return net(x, t, left, pos), net(x, t, right, pos), net


def test_a_fresh_model_reacts_to_the_turn_through_the_direct_path():
    cfg = preset("tiny")
    assert cfg.model.action_tokens and not cfg.model.action_zero_init
    a, b, net = _outputs(cfg)
    assert all(blk.action_in is not None for blk in net.blocks)
    assert (a - b).abs().mean() > 1e-3 * a.abs().mean()


def test_zero_initialised_action_layers_start_blind_to_the_keys():
    cfg = apply_overrides(preset("tiny"), ["model.action_zero_init=true"])
    a, b, _ = _outputs(cfg)
    assert torch.equal(a, b)
    assert preset("wan-1.3b").model.action_zero_init  # a converted checkpoint starts as the original


def test_checkpoints_without_the_direct_path_still_build_as_they_were():
    cfg = apply_overrides(preset("tiny"), ["model.action_tokens=false"])
    net = CausalDiT(cfg.model)
    assert all(blk.action_in is None for blk in net.blocks)
    assert not any("action_in" in k for k in net.state_dict())


def test_context_noise_levels_are_per_block_and_only_on_the_chosen_share(tmp_path):
    from train_helpers import options, save_tiny_autoencoder
    from worldmodel.train.distributed import DistInfo
    from worldmodel.train.stage_teacher import TeacherStage

    cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    ae = save_tiny_autoencoder(tmp_path / "ae")
    stage = TeacherStage(preset("tiny"), options(tmp_path / "run", extra={"autoencoder": str(ae)}), cpu)
    stage.build()
    torch.manual_seed(0)
    levels = stage.context_sigmas(400, 6, max_level=0.3, prob=0.5)
    assert levels.shape == (400, 6)
    assert torch.equal(levels[:, :3], levels[:, :1].expand(-1, 3))  # one level per block
    noised = (levels > 0).any(1).float().mean()
    assert 0.4 < noised < 0.6 and levels.max() <= 0.3
    assert stage.context_sigmas(4, 6, max_level=0.0, prob=0.5) is None
    # logit-normal levels gather in the middle more than uniform ones
    u = stage.sigmas_per_frame(4000, 6, "uniform", shift=1.0)
    ln = stage.sigmas_per_frame(4000, 6, "logit-normal", shift=1.0)
    middle = lambda s: ((s > 0.3) & (s < 0.7)).float().mean()  # noqa: E731
    assert middle(ln) > middle(u) + 0.1


def _guided_block(w, actions, seed=3):
    from worldmodel.rollout import Rollout

    cfg = apply_overrides(preset("tiny"), [f"sampler.action_guidance={w}", "memory.strategy=full"])
    torch.manual_seed(0)
    net = CausalDiT(cfg.model).eval()
    with torch.no_grad():
        for block in net.blocks:
            block.modulation.normal_(0, 0.5)
        net.head.weight.normal_(0, 0.1)
    roll = Rollout(net, cfg.sampler, cfg.memory)
    m = cfg.model
    noise = torch.randn(1, m.block_frames, m.latent_channels, m.latent_height, m.latent_width,
                        generator=torch.Generator().manual_seed(seed))
    return roll.generate(actions, noise=noise, generator=torch.Generator().manual_seed(seed)), roll


def test_action_guidance_moves_a_turn_away_from_still_and_leaves_still_alone():
    m = preset("tiny").model
    turn = torch.zeros(1, m.block_frames, m.action_dim)
    turn[..., 0] = 11.25
    still = torch.zeros_like(turn)
    plain, _ = _guided_block(1.0, turn)
    guided, roll = _guided_block(2.0, turn)
    assert roll.action_guidance == 2.0
    assert (guided - plain).abs().mean() > 1e-3 * plain.abs().mean()
    # w = 0 is the still prediction whatever the keys say; w changes nothing for a still block
    assert torch.allclose(_guided_block(0.0, turn)[0], _guided_block(1.0, still)[0], atol=1e-5)
    assert torch.equal(_guided_block(3.0, still)[0], _guided_block(1.0, still)[0])


def test_action_guidance_outside_its_range_is_refused():
    import pytest

    for bad in ("-1", "11", "nan"):
        with pytest.raises(ValueError, match="action_guidance"):
            apply_overrides(preset("tiny"), [f"sampler.action_guidance={bad}"])
