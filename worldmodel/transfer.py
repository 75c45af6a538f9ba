"""Copies from the host to the device that do not wait for the device.

A copy from ordinary (pageable) host memory to CUDA first waits for everything already queued on
the stream, so a training loop that sends its batch, or a rollout that sends slot indices, stops
launching work until the GPU has caught up. From pinned memory, non-blocking, the copy is queued
like any kernel instead.
"""

from __future__ import annotations

import torch


def to_device_nowait(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`t` on `device`; a host tensor goes to CUDA through pinned memory, without waiting."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
