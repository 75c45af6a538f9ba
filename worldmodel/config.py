"""Typed configuration: every size in the project comes from one of these dataclasses.

A preset (`tiny`, `doom-cpu`, `doom-small`, `doom-gpu`, `wan-1.3b`) is a `WorldModelConfig`; command lines
override fields with `section.field=value` (see `apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from worldmodel.actions import ACTION_DIM, POSE_DIM


@dataclass
class AutoencoderConfig:
    """Frame-wise convolutional autoencoder: RGB [3, H, W] <-> latent [C, H/d, W/d]."""

    frame_height: int = 120
    frame_width: int = 160
    latent_channels: int = 8
    downsample: int = 8  # a power of two; one stride-2 stage per factor of two
    base_channels: int = 64
    max_channels: int = 256
    res_blocks: int = 1  # residual blocks per resolution stage
    kl_weight: float = 1e-6  # weight of the KL regulariser on the latent (a near-deterministic VAE)

    def __post_init__(self):
        _at_least(self, "autoencoder", 1, "frame_height", "frame_width", "latent_channels", "base_channels",
                  "max_channels", "downsample")
        _at_least(self, "autoencoder", 0, "res_blocks")
        if self.downsample & (self.downsample - 1):
            raise ValueError(f"autoencoder.downsample must be a power of two, got {self.downsample}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"autoencoder.kl_weight must be a finite number >= 0, got {self.kl_weight}")

    @property
    def latent_height(self) -> int:
        return -(-self.frame_height // self.downsample)

    @property
    def latent_width(self) -> int:
        return -(-self.frame_width // self.downsample)


@dataclass
class ModelConfig:
    """The causal diffusion transformer over latent frames."""

    latent_channels: int = 8
    latent_height: int = 15
    latent_width: int = 20
    patch: tuple[int, int, int] = (1, 1, 1)  # (time, height, width); time must be 1
    dim: int = 384
    heads: int = 6
    layers: int = 8
    ffn_dim: int = 1536
    freq_dim: int = 256  # sinusoidal timestep features before the time MLP
    block_frames: int = 3  # B: frames denoised together, full attention inside a block
    action_dim: int = ACTION_DIM
    pose_dim: int = POSE_DIM
    # Prompt / scene condition through cross-attention; `num_scenes` > 0 adds a learned table of
    # scene prompts (e.g. one per map), and a learned null prompt always stands for "empty".
    cross_attention: bool = True
    # Action conditioning. The action always reaches the time embedding (adaLN). `action_tokens`
    # also adds a per-block projection of it to every token of its frame: a direct path that
    # makes the model follow the keys within the first thousand steps (adaLN alone learns it far
    # later; DESIGN.md, "Why the model ignores the keys"). `action_zero_init` starts the action
    # layers at zero, so that a converted text-to-video checkpoint behaves as the original until
    # fine-tuned; from scratch it slows action learning, so only wan-1.3b sets it.
    action_tokens: bool = False
    action_zero_init: bool = False
    text_dim: int = 64
    text_tokens: int = 4
    num_scenes: int = 0
    eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        self.patch = tuple(self.patch)
        _at_least(self, "model", 1, "latent_channels", "latent_height", "latent_width", "dim", "heads", "layers",
                  "ffn_dim", "freq_dim", "block_frames", "text_dim", "text_tokens")
        _at_least(self, "model", 0, "num_scenes")
        if (self.action_dim, self.pose_dim) != (ACTION_DIM, POSE_DIM):
            raise ValueError(f"model.action_dim and model.pose_dim must be {ACTION_DIM} and {POSE_DIM} "
                             f"(worldmodel/actions.py), got {self.action_dim} and {self.pose_dim}")
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ValueError(f"model.patch must be 3 integers >= 1 (time, height, width), got {self.patch}")
        if not (self.eps > 0 and self.rope_theta > 0 and math.isfinite(self.eps) and math.isfinite(self.rope_theta)):
            raise ValueError(f"model.eps and model.rope_theta must be finite and > 0, got {self.eps}, {self.rope_theta}")
        if self.patch[0] != 1:
            raise ValueError(f"patch[0] (time) must be 1 for frame-autoregressive generation, got {self.patch}")
        if self.latent_height % self.patch[1] or self.latent_width % self.patch[2]:
            raise ValueError(
                f"latent {self.latent_height}x{self.latent_width} is not divisible by the patch {self.patch[1:]}"
            )
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim {self.head_dim} must be even and at least 6 for 3-D RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid of one latent frame: (height, width)."""
        return self.latent_height // self.patch[1], self.latent_width // self.patch[2]

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.grid
        return h * w


def check_action_guidance(w: float, name: str) -> float:
    """The action-guidance scale, validated: finite, in [0, 10] (1 = off)."""
    if not (math.isfinite(w) and 0 <= w <= 10):
        raise ValueError(f"{name} must be in [0, 10] (1 = off), got {w}")
    return float(w)


@dataclass
class SamplerConfig:
    """Few-step flow-matching sampler (Self Forcing / MAG: 4 steps)."""

    timesteps: tuple[int, ...] = (1000, 750, 500, 250)  # on the 0..num_train_timesteps scale
    shift: float = 5.0  # timestep shift: sigma' = shift*s / (1 + (shift-1)*s)
    num_train_timesteps: int = 1000
    teacher_steps: int = 20  # steps of the multi-step teacher's sampler
    # Action guidance: each step's velocity is v(still) + w * (v(actions) - v(still)), "still" being
    # the all-zero action; 1 = off. w > 1 exaggerates what the keys change. Costs a second pass for
    # every block with a key pressed (a still block is the same either way).
    action_guidance: float = 1.0

    def __post_init__(self):
        self.timesteps = tuple(int(t) for t in self.timesteps)
        _at_least(self, "sampler", 1, "num_train_timesteps", "teacher_steps")
        check_action_guidance(self.action_guidance, "sampler.action_guidance")
        if not self.timesteps or not all(0 < t <= self.num_train_timesteps for t in self.timesteps):
            raise ValueError(f"sampler.timesteps must be a non-empty list in (0, {self.num_train_timesteps}], "
                             f"got {list(self.timesteps)}")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"sampler.shift must be a finite number > 0, got {self.shift}")


@dataclass
class MemoryConfig:
    """KV memory: capacity (static buffers), and the strategy that fills it."""

    strategy: str = "mag"  # none | full | window | mag | memorypack
    capacity_frames: int = 64  # slots held; each slot is one latent frame's K/V in every layer
    window_frames: int = 9  # `window`: recent frames kept
    sink_frames: int = 3  # `window`/`full`: first frames never evicted
    attention_budget: int = 24  # slots attended per block (recent + pose-retrieved); <= capacity
    # `memorypack`: the SemanticPack's long-term state ψ of `pack_tokens` tokens (of the model's
    # text_dim), made by `pack_layers` self-attention layers of `pack_heads` heads per block.
    pack_tokens: int = 8
    pack_layers: int = 2
    pack_heads: int = 4

    def __post_init__(self):
        _at_least(self, "memory", 0, "capacity_frames", "window_frames", "sink_frames", "attention_budget")
        if min(self.pack_tokens, self.pack_layers, self.pack_heads) < 1:
            raise ValueError(
                f"pack_tokens, pack_layers and pack_heads must be >= 1, got "
                f"{self.pack_tokens}, {self.pack_layers}, {self.pack_heads}"
            )
        if self.attention_budget > self.capacity_frames:
            raise ValueError(
                f"attention_budget {self.attention_budget} exceeds capacity_frames {self.capacity_frames}"
            )


@dataclass
class WorldModelConfig:
    name: str = "custom"
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def check_consistent(self) -> None:
        """Raise ValueError unless the autoencoder's latents are what the model takes (required to
        run a model; a stage that trains the autoencoder alone may change one side only)."""
        a, m = self.autoencoder, self.model
        if (a.latent_channels, a.latent_height, a.latent_width) != (m.latent_channels, m.latent_height, m.latent_width):
            raise ValueError(
                f"the autoencoder makes latents of {a.latent_channels}x{a.latent_height}x{a.latent_width} "
                f"(channels x height x width, from {a.frame_height}x{a.frame_width} frames / {a.downsample}) but the "
                f"model takes {m.latent_channels}x{m.latent_height}x{m.latent_width}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected {sorted(known)}")
        if not isinstance(d.get("name", ""), str):
            raise ValueError(f"config name must be a string, got {d['name']!r}")
        return cls(
            name=d.get("name", "custom"),
            autoencoder=_build(AutoencoderConfig, "autoencoder", d.get("autoencoder", {})),
            model=_build(ModelConfig, "model", d.get("model", {})),
            sampler=_build(SamplerConfig, "sampler", d.get("sampler", {})),
            memory=_build(MemoryConfig, "memory", d.get("memory", {})),
        )


def _build(cls, section: str, d: dict[str, Any]):
    if not isinstance(d, dict):
        raise ValueError(f"config section {section!r} must be an object of fields, got {d!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        if not _has_type(value, hints[name]):
            raise ValueError(f"{section}.{name} must be {_type_words(hints[name])}, got {value!r}")
    return cls(**d)


# A config file may be damaged or hostile: every value is checked against its field's type (a
# width of "32" would fail much later, deep in a convolution) and its range (a frame height of 0
# builds a model that fails every request).


def _has_type(value, want) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is str:
        return isinstance(value, str)
    if typing.get_origin(want) is tuple:
        args = typing.get_args(want)
        item = args[0]
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        return (isinstance(value, (list, tuple)) and (not fixed or len(value) == len(args))
                and all(_has_type(v, item) for v in value))
    return True


def _type_words(want) -> str:
    if typing.get_origin(want) is tuple:
        args = typing.get_args(want)
        n = "a list of" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)}"
        return f"{n} {_type_words(args[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(want, str(want))


def _at_least(config, section: str, low: int, *names: str) -> None:
    for name in names:
        if getattr(config, name) < low:
            raise ValueError(f"{section}.{name} must be at least {low}, got {getattr(config, name)}")


def _preset_tiny() -> WorldModelConfig:
    return WorldModelConfig(
        name="tiny",
        autoencoder=AutoencoderConfig(
            frame_height=24, frame_width=32, latent_channels=4, downsample=8, base_channels=8, max_channels=16
        ),
        model=ModelConfig(
            latent_channels=4, latent_height=3, latent_width=4, dim=32, heads=2, layers=2, ffn_dim=64,
            freq_dim=32, text_dim=16, text_tokens=2, num_scenes=4, action_tokens=True,
        ),
        sampler=SamplerConfig(teacher_steps=4),
        memory=MemoryConfig(capacity_frames=24, window_frames=6, sink_frames=3, attention_budget=12),
    )


def _preset_doom_cpu() -> WorldModelConfig:
    return WorldModelConfig(
        name="doom-cpu",
        autoencoder=AutoencoderConfig(latent_channels=8, base_channels=32, max_channels=128),
        model=ModelConfig(
            latent_channels=8, latent_height=15, latent_width=20, patch=(1, 3, 2), dim=192, heads=3,
            layers=6, ffn_dim=768, num_scenes=64, action_tokens=True,
        ),
        memory=MemoryConfig(capacity_frames=48, attention_budget=12),
    )


def _preset_doom_gpu() -> WorldModelConfig:
    # The shipped default: twice doom-cpu (8.6M parameters) at the same 50 tokens per frame (patch
    # 3x2 over the 15x20 latent), sized so that its generator and memory model (17 MB each in
    # bf16) and its teacher ship in git within the repository's 60 MB for checkpoints. 16 latent
    # channels since session 15 (the shipped bundle's): the 8-channel autoencoder's ceiling on
    # moving frames (29.4 dB) was under what copy-last + 2 dB needs; the 8-channel chain's runs
    # take --set autoencoder.latent_channels=8 --set model.latent_channels=8.
    return WorldModelConfig(
        name="doom-gpu",
        autoencoder=AutoencoderConfig(latent_channels=16, base_channels=32, max_channels=128),
        model=ModelConfig(
            latent_channels=16, latent_height=15, latent_width=20, patch=(1, 3, 2), dim=256, heads=4,
            layers=7, ffn_dim=1024, num_scenes=64, action_tokens=True,
        ),
        memory=MemoryConfig(capacity_frames=96, attention_budget=24),
    )


def _preset_doom_small() -> WorldModelConfig:
    return WorldModelConfig(
        name="doom-small",
        # The same autoencoder as doom-cpu: one trained AE serves both, and its decoder is cheap.
        autoencoder=AutoencoderConfig(latent_channels=8, base_channels=32, max_channels=128),
        model=ModelConfig(
            latent_channels=8, latent_height=15, latent_width=20, patch=(1, 1, 1), dim=256, heads=4,
            layers=6, ffn_dim=1024, num_scenes=64,
        ),
        memory=MemoryConfig(capacity_frames=96, attention_budget=24),
    )


def _preset_wan_1_3b() -> WorldModelConfig:
    # Shapes of Wan2.1-T2V-1.3B at 480x832: 16 latent channels, 8x VAE, patch 1x2x2.
    return WorldModelConfig(
        name="wan-1.3b",
        autoencoder=AutoencoderConfig(frame_height=480, frame_width=832, latent_channels=16),
        model=ModelConfig(
            latent_channels=16, latent_height=60, latent_width=104, patch=(1, 2, 2), dim=1536, heads=12,
            layers=30, ffn_dim=8960, freq_dim=256, text_dim=4096, text_tokens=512, num_scenes=0,
            action_tokens=True, action_zero_init=True,
        ),
        memory=MemoryConfig(capacity_frames=21, window_frames=12, sink_frames=3, attention_budget=21),
    )


PRESETS = {
    "tiny": _preset_tiny,
    "doom-cpu": _preset_doom_cpu,
    "doom-small": _preset_doom_small,
    "doom-gpu": _preset_doom_gpu,
    "wan-1.3b": _preset_wan_1_3b,
}


def preset(name: str) -> WorldModelConfig:
    """A fresh copy of a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def apply_overrides(config, overrides: list[str]):
    """Apply `a.b.c=value` overrides (value parsed as JSON when it parses, else a string).

    Returns a new config object; the field must exist, and its type is checked loosely.
    """
    d = dataclasses.asdict(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.field=value")
        path, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise ValueError(f"override {item!r}: {k!r} is not a config section")
            node = node[k]
        if keys[-1] not in node:
            raise ValueError(f"override {item!r}: no field {keys[-1]!r} (have {sorted(node)})")
        node[keys[-1]] = value
    return type(config).from_dict(d) if hasattr(type(config), "from_dict") else type(config)(**d)
