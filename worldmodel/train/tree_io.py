"""Nested training state (dicts, lists, tuples, tensors, numpy arrays, scalars) <-> tensors + JSON.

Optimizer states, RNG states and data-loader positions are nested structures with tensors at the
leaves. They are stored without pickle: tensors go to a safetensors file under generated keys,
everything else to JSON, with small markers that restore tuples, tensors and arrays exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_TENSOR, _ARRAY, _TUPLE, _INTKEYS = "__tensor__", "__ndarray__", "__tuple__", "__intkeys__"


def flatten(obj: Any, prefix: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split `obj` into a JSON-able skeleton and a dict of tensors keyed `prefix.<path>`."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[path] = o.detach().cpu().contiguous()
            return {_TENSOR: path}
        if isinstance(o, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(o).copy())
            return {_ARRAY: path}
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, dict):
            if all(isinstance(k, str) for k in o):
                return {k: walk(v, f"{path}.{k}") for k, v in o.items()}
            if all(isinstance(k, int) for k in o):  # optimizer state is keyed by parameter index
                return {_INTKEYS: [[k, walk(v, f"{path}.{k}")] for k, v in o.items()]}
            raise TypeError(f"cannot store dict keys of types {sorted({type(k).__name__ for k in o})} at {path}")
        if isinstance(o, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(o)]}
        if isinstance(o, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(o)]
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store a {type(o).__name__} in a training state (at {path})")

    return walk(obj, prefix), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten`."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _ARRAY in skeleton:
            return tensors[skeleton[_ARRAY]].numpy().copy()
        if _TUPLE in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[_TUPLE])
        if _INTKEYS in skeleton:
            return {int(k): unflatten(v, tensors) for k, v in skeleton[_INTKEYS]}
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton
