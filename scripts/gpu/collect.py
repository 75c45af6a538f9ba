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

LIMIT = 16 * 2**20
SKIP = ("fake_score", "discriminator")  # training-only networks are not brought back


def main(out: str, *runs: str) -> None:
    with tarfile.open(out, "w") as tar:
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
                    data = save(state, metadata={"format": "pt"})
                    _add(tar, f"{run.name}/checkpoint/{f.name}", data)
                elif f.suffix == ".json":
                    _add(tar, f"{run.name}/checkpoint/{f.name}", f.read_bytes())
            for extra in ("metrics.csv", "machine.txt"):
                if (run / extra).is_file():
                    _add(tar, f"{run.name}/{extra}", (run / extra).read_bytes())
    size = Path(out).stat().st_size
    print(f"collect: {out} {size / 2**20:.1f} MiB")
    if size > LIMIT:
        raise SystemExit(f"collect: {out} is over 16 MiB and would not come back; split the runs")


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main(*sys.argv[1:])
