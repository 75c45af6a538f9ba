"""Where does a training step's time go? Times data, encoding and the step of a stage on the GPU.

python3 scripts/gpu/profile_step.py DATA_DIR AE_RUN STAGE PRESET [BATCH] [STEPS]
"""

import sys
import time
from pathlib import Path

import torch

from worldmodel.config import preset
from worldmodel.data.dataset import ClipDataset
from worldmodel.train.distributed import DistInfo
from worldmodel.train.stage import TrainOptions
from worldmodel.train.stages import load_stage
from worldmodel.train.trainer import Batches


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(data, ae, stage_name, preset_name, batch=32, steps=30):
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = DistInfo(0, 1, 0, dev)
    cfg = preset(preset_name)
    extra = {"autoencoder": ae, "scene_dropout": 0.1, "clip_blocks": None}
    opts = TrainOptions(out=Path("/tmp/prof"), batch_size=int(batch), extra=extra)
    stage = load_stage(stage_name)(cfg, opts, info)
    stage.build()
    batches = Batches(ClipDataset(data, stage.clip_frames, 3, "train"), stage.local_batch_size)
    t = {"data": 0.0, "to_gpu": 0.0, "encode": 0.0, "step": 0.0}
    for i in range(int(steps) + 5):
        if i == 5:
            t = dict.fromkeys(t, 0.0)
        sync(); t0 = time.perf_counter()
        b = next(batches)
        t1 = time.perf_counter()
        b = {k: v.to(dev) for k, v in b.items()}
        sync(); t2 = time.perf_counter()
        stage.encode(b)
        sync(); t3 = time.perf_counter()
        stage.train_step(b, i)
        sync(); t4 = time.perf_counter()
        for k, d in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += d
    print(stage_name, preset_name, "batch", batch, " ".join(f"{k}={1000 * v / int(steps):.1f}ms" for k, v in t.items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
