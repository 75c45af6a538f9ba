"""Base of the stages that train a transformer on latent clips (teacher, generator, memory model).

It loads the frozen autoencoder (`--autoencoder DIR`), turns a batch of RGB clips into latents,
and offers the pieces every such stage shares: initialising a CausalDiT from another run,
scene-condition dropout, and randomised RoPE start offsets (in whole blocks, so no model comes to
depend on absolute time).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from worldmodel.autoencoder import channels_first, load_autoencoder
from worldmodel.model import CausalDiT
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.distributed import is_sharded
from worldmodel.train.ema import EMA
from worldmodel.train.stage import Stage

MAX_OFFSET_BLOCKS = 64  # RoPE start offsets drawn from [0, 64) blocks


def paired_velocity(net, clean, noisy, sigma, actions, pos, mask, scene, autocast,
                    history_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Flow velocity (float32) of the noisy half of the sequence [clean ; noisy].

    The training layout of every latent stage: clean frames (t = 0) play the KV cache, the noisy
    copy is what is denoised. clean, noisy [b, F, C, h, w]; sigma [b, F] noise levels of the
    noisy half; actions [b, F, A] (shared by both halves); pos [2F]; mask [2F, 2F]; scene [b].
    history_sigma [b, F]: the noise level the "clean" half was given (context noise
    augmentation; the model is told it), zeros by default.
    Returns v [b, F, C, h, w].
    """
    f = clean.shape[1]
    hist = torch.zeros_like(sigma) if history_sigma is None else history_sigma
    t = torch.cat([hist * 1000.0, sigma * 1000.0], 1)
    with autocast():
        # validate=False: a stage feeds its own tensors, and a frozen score model (eval mode) would
        # otherwise check their values, synchronising with the device on every call
        v = net(torch.cat([clean, noisy], 1), t, torch.cat([actions, actions], 1), pos, frame_mask=mask, scene=scene,
                validate=False)
    return v[:, f:].float()


class LatentStage(Stage):
    default_clip_blocks = 4
    default_batch_size = 16

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--autoencoder", required=True, help="run or checkpoint directory of the trained autoencoder")
        parser.add_argument("--init", default=None,
                            help="run or checkpoint directory to initialise the trained network from")
        parser.add_argument("--clip-blocks", type=int, default=cls.default_clip_blocks,
                            help=f"blocks per training clip (default {cls.default_clip_blocks})")
        parser.add_argument("--scene-dropout", type=float, default=0.1,
                            help="probability of training with the empty scene condition (default 0.1)")
        parser.add_argument("--latent-cache", choices=("auto", "on", "off"), default="auto",
                            help="train on the dataset's frames encoded once (DATA/latents/, built if missing or "
                                 "stale) instead of encoding every batch; auto: on with CUDA (default)")
        parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                            help="torch.compile the stage's networks (dmd/generator: the score models whole, the "
                                 "generator's token paths); auto: on with CUDA (default)")

    def build(self) -> None:
        extra = self.options.extra
        self.block = self.config.model.block_frames
        self.clip_blocks = int(extra.get("clip_blocks") or self.default_clip_blocks)
        self.clip_frames = self.clip_blocks * self.block
        self.scene_dropout = float(extra.get("scene_dropout", 0.1))
        ae_dir = extra.get("autoencoder")
        if not ae_dir:
            raise ValueError(f"stage {self.name} needs --autoencoder DIR (a trained autoencoder run)")
        self.autoencoder = load_autoencoder(ae_dir, self.device).requires_grad_(False)
        ae, m = self.autoencoder.config, self.config.model
        if (ae.latent_channels, ae.latent_height, ae.latent_width) != (m.latent_channels, m.latent_height, m.latent_width):
            raise ValueError(
                f"the autoencoder in {ae_dir} makes latents {ae.latent_channels}x{ae.latent_height}x{ae.latent_width} "
                f"but the model expects {m.latent_channels}x{m.latent_height}x{m.latent_width}"
            )
        self.config.autoencoder = ae  # ship the autoencoder's config with every checkpoint of this run
        self.build_models()

    def build_models(self) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- services

    def train_network(self, name: str, model: CausalDiT, betas=(0.9, 0.99)) -> None:
        """The stage trains this one network: DDP or FSDP (`--parallel`), AdamW and EMA, under `name`."""
        self.network_name = name
        self.network = model
        self.net = self.compiled(self.parallel(model))
        self.optimizer = self.adamw(model, lr=self.lr, betas=betas, weight_decay=self.options.weight_decay)
        self.ema = EMA(model, decay=self.options.ema_decay)

    def ema_network(self) -> CausalDiT:
        """An eager copy of the trained network holding its EMA weights as they are now (the
        weights that ship), for validation; made on the first call, refreshed on every call."""
        if is_sharded(self.network):
            raise ValueError("validation (--val-data) needs the whole network on each process: not under FSDP")
        if getattr(self, "_ema_copy", None) is None:
            self._ema_copy = copy.deepcopy(self.network).eval().requires_grad_(False)
        self.ema.copy_to(self._ema_copy)
        return self._ema_copy

    def models(self):
        return {self.network_name: self.network}

    def optimizers(self):
        return {self.network_name: self.optimizer}

    def emas(self):
        return {self.network_name: self.ema}

    def new_dit(self, init: str | None = None, names: tuple[str, ...] = ()) -> CausalDiT:
        """A CausalDiT on this device, with weights from the first of `names` found in `init`."""
        model = CausalDiT(self.config.model).to(self.device)
        if init:
            directory = ckpt.resolve_checkpoint(init)
            for name in names:
                if any(Path(directory).glob(f"{name}*.safetensors")):
                    ckpt.load_module(model, directory, name)
                    return model
            raise ckpt.CheckpointError(f"{directory} holds none of the weights {list(names)} to initialise from")
        return model

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """frames uint8 [b, L, H, W, 3] -> latents float32 [b, L, C, h, w]; a batch from the
        latent cache carries them already (`latents`)."""
        if "latents" in batch:
            return batch["latents"]
        frames = batch["frames"]
        b, length = frames.shape[:2]
        with self.autocast():
            z = self.autoencoder.encode(channels_first(frames.flatten(0, 1)))
        return z.float().unflatten(0, (b, length))

    def scenes(self, batch: dict[str, torch.Tensor], p_drop: float | None = None) -> torch.Tensor:
        """Scene ids [b], each replaced by -1 (empty condition) with probability p_drop."""
        scene = batch["scene"].long().to(self.device)
        if self.config.model.num_scenes == 0:
            return torch.full_like(scene, -1)
        p = self.scene_dropout if p_drop is None else p_drop
        drop = torch.rand(scene.shape, device=self.device) < p
        return torch.where(drop, torch.full_like(scene, -1), scene)

    def positions(self, frames: int, copies: int = 1, offset: int | None = None) -> torch.Tensor:
        """Frame positions [copies*frames] starting at `offset` (default: a random whole block,
        `position_offset()`), repeated per copy."""
        offset = self.position_offset() if offset is None else offset
        pos = torch.arange(offset, offset + frames, device=self.device)
        return pos.repeat(copies)

    def position_offset(self) -> int:
        """A random whole-block RoPE start, drawn on the host (reading it back from a device
        tensor would synchronise)."""
        return int(torch.randint(0, MAX_OFFSET_BLOCKS, ())) * self.block

    def sigmas_per_frame(self, b: int, frames: int, sampling: str = "uniform", shift: float | None = None) -> torch.Tensor:
        """Diffusion-forcing noise levels [b, frames]: half the samples one level per block,
        half one level per frame. `sampling`: "uniform" u ~ U(0, 1), or "logit-normal"
        u = sigmoid(N(0, 1)) (SD3: more training at the middle levels, where the layout of the
        frame is decided); then shifted by `shift` (default: the sampler's)."""
        from worldmodel.diffusion.flow_matching import shift_sigma

        shift = self.config.sampler.shift if shift is None else shift

        def draw(*shape):
            if sampling == "logit-normal":
                return torch.sigmoid(torch.randn(*shape, device=self.device))
            if sampling == "uniform":
                return torch.rand(*shape, device=self.device)
            raise ValueError(f"noise-level sampling {sampling!r} must be 'uniform' or 'logit-normal'")

        per_block = draw(b, frames // self.block).repeat_interleave(self.block, 1)
        per_frame = draw(b, frames)
        choose = torch.rand(b, 1, device=self.device) < 0.5
        u = torch.where(choose, per_block, per_frame)
        return shift_sigma(u, shift).clamp(1e-3, 1.0)

    def context_sigmas(self, b: int, frames: int, max_level: float, prob: float) -> torch.Tensor | None:
        """Context noise augmentation (GameNGen, DIAMOND): levels [b, frames] for the history
        frames, one per block, U(0, max_level) for a `prob` share of the samples and 0 for the
        rest, so the model learns to read imperfect history (its own frames at inference) and is
        told how imperfect. None when off."""
        if max_level <= 0 or prob <= 0:
            return None
        level = torch.rand(b, frames // self.block, device=self.device) * max_level
        on = torch.rand(b, 1, device=self.device) < prob
        return torch.where(on, level, torch.zeros_like(level)).repeat_interleave(self.block, 1)
