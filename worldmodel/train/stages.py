"""Registry of training stages: `magworld train <name>` runs the class at the given path.

A stage is added by writing a `Stage` subclass (see stage.py) and one line here.
"""

from __future__ import annotations

import importlib

STAGES: dict[str, str] = {
    "autoencoder": "worldmodel.train.stage_autoencoder:AutoencoderStage",
    "teacher": "worldmodel.train.stage_teacher:TeacherStage",
    "ode-init": "worldmodel.train.stage_ode_init:OdeInitStage",
    "dmd": "worldmodel.train.stage_dmd:DMDStage",
    "direct-forcing": "worldmodel.train.stage_direct_forcing:DirectForcingStage",
    "memory": "worldmodel.train.stage_memory:MemoryStage",
    "generator": "worldmodel.train.stage_generator:GeneratorStage",
    "memorypack": "worldmodel.train.stage_memorypack:MemoryPackStage",
}


def available_stages() -> list[str]:
    return list(STAGES)


def load_stage(name: str):
    """The Stage subclass registered as `name`."""
    try:
        target = STAGES[name]
    except KeyError:
        raise ValueError(f"unknown training stage {name!r}; available: {', '.join(STAGES)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
