"""A one-line description of the machine a figure was measured on."""

from __future__ import annotations

import os
import platform


def describe(device: str = "cpu") -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.device(device))
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def report(result: dict, json_path=None) -> int:
    """Print a benchmark's result as an aligned two-column table (and write it as JSON)."""
    import json

    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0
