"""A safetensors file's header, read and checked before the safetensors library opens the file.

Layout (https://github.com/huggingface/safetensors#format): 8 bytes, a little-endian u64 N; N
bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}`; then the data, whose byte ranges the tensors tile exactly, in order. The library
reports a damaged file as "Error while deserializing header: ..." without naming the file;
`read_header` names the file and the problem, reads at most N <= MAX_HEADER_BYTES bytes, and
allocates nothing for the tensors, so shapes can be checked against a model before loading.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # the library's own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


class DamagedFile(ValueError):
    """A file that is not a well-formed safetensors file; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """{tensor name: TensorEntry} of a safetensors file; raises DamagedFile if the file is damaged."""
    path = Path(path)

    def damaged(problem: str) -> DamagedFile:
        return DamagedFile(f"{path}: damaged safetensors file: {problem}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise damaged(f"{size} bytes, shorter than the 8-byte header length" if size else "the file is empty")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise damaged(f"header length {n} exceeds the {size - 8} bytes after it"
                          + (f" (and the {MAX_HEADER_BYTES}-byte limit)" if n > MAX_HEADER_BYTES else ""))
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise damaged("the header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise damaged("__metadata__ is not an object of strings")
    data_bytes = size - 8 - n
    entries, ranges = {}, []
    for name, spec in header.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise damaged(f"tensor {name!r} is not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise damaged(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise damaged(f"tensor {name!r} has shape {shape!r}; expected a list of integers >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise damaged(f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end] with begin <= end")
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]  # Python integers: a huge shape cannot overflow
        if offsets[1] - offsets[0] != nbytes:
            raise damaged(f"tensor {name!r} of shape {shape} {dtype} needs {nbytes} bytes but data_offsets "
                          f"{offsets} hold {offsets[1] - offsets[0]}")
        if offsets[1] > data_bytes:
            raise damaged(f"tensor {name!r} ends at byte {offsets[1]} of the data, past its end at {data_bytes} "
                          "(a truncated file?)")
        entries[name] = TensorEntry(dtype, tuple(shape))
        ranges.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise damaged(f"tensor {name!r} starts at data byte {begin}, expected {end} (tensors must tile the data)")
        end = stop
    if end != data_bytes:
        raise damaged(f"the tensors cover {end} bytes of data but the file holds {data_bytes}")
    return entries


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
