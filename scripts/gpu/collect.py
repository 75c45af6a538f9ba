"""Pack the shippable part of training runs (weights in bf16, config, metrics) into one tar.

python3 scripts/gpu/collect.py OUT.tar RUN_DIR [RUN_DIR ...]
The device machine returns at most 16 MiB per file; weights over that are refused here loudly.
"""

import io
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

PART = 15 * 2**20  # under the 16 MiB the device returns per file
TAR_OVERHEAD = 1024  # a tar header and padding per member, rounded up
SKIP = ("fake_score", "discriminator")  # training-only networks are not brought back


def main(out: str, *runs: str) -> None:
    """Write OUT.tar, then OUT-2.tar, ... so that no part exceeds PART (the device returns files of
    at most 16 MiB: a run's sharded weights are split across parts, never across files)."""
    entries = []
    for run in map(Path, runs):
        ck = run / "checkpoint"
        if not ck.is_dir():
            print(f"collect: {run} has no checkpoint, skipped", file=sys.stderr)
            continue
        for f in sorted(ck.iterdir()):
            if f.name.startswith(SKIP):
                continue
            if f.suffix == ".safetensors":
                state = {k: (v.to(torch.bfloat16) if v.is_floating_point() and v.numel() > 64 else v)
                         for k, v in load_file(str(f)).items()}
                entries.append((f"{run.name}/checkpoint/{f.name}", save(state, metadata={"format": "pt"})))
            elif f.suffix == ".json":
                entries.append((f"{run.name}/checkpoint/{f.name}", f.read_bytes()))
        for extra in ("metrics.csv", "machine.txt"):
            if (run / extra).is_file():
                entries.append((f"{run.name}/{extra}", (run / extra).read_bytes()))
    parts: list[list] = [[]]
    for name, data in entries:
        if len(data) + TAR_OVERHEAD > PART:
            raise SystemExit(f"collect: {name} is {len(data) / 2**20:.1f} MiB, over what one returned file holds; "
                             "save the weights in smaller shards")
        if parts[-1] and sum(len(d) + TAR_OVERHEAD for _, d in parts[-1]) + len(data) + TAR_OVERHEAD > PART:
            parts.append([])
        parts[-1].append((name, data))
    stem = out[:-4] if out.endswith(".tar") else out
    for i, part in enumerate(parts):
        path = out if i == 0 else f"{stem}-{i + 1}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in part:
                _add(tar, name, data)
        print(f"collect: {path} {Path(path).stat().st_size / 2**20:.1f} MiB")


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(*sys.argv[1:])
