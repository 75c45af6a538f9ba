"""Does a GAN-tuned decoder sharpen what the player sees? (docs/results.md, session 11)

The decoder-only GAN runs (scripts/gpu/session_ae_gan.sh) keep the encoder bit-identical, so any
of their decoders can replace a bundle's. For held-out clips: observe 3 true blocks, generate
the next block with the bundle's generator (window memory, as shipped), and decode both the true
latents (the autoencoder's ceiling) and the generated ones with each decoder. Prints PSNR
against the engine and sharpness (Laplacian variance) as a ratio to the engine's, and writes a
picture: one row per decoder, true-latent reconstruction and generated frame side by side.

    python scripts/analysis/compare_decoders.py --data HELDOUT --decoder gan05=DIR [--decoder ...] \
        --png docs/media/session11/decoders.png
"""

import argparse
import itertools

import numpy as np
import torch
from PIL import Image, ImageDraw

from worldmodel.autoencoder import Autoencoder, frames_to_uint8, load_autoencoder
from worldmodel.bundle import WorldModel
from worldmodel.data.dataset import ClipDataset
from worldmodel.metrics import psnr, sharpness


def decoder_run(directory: str, like: WorldModel) -> Autoencoder:
    """A decoder-only run's autoencoder, refused unless its encoder is the bundle's, bit for bit."""
    ae = load_autoencoder(directory)
    if ae.config != like.config.autoencoder:
        raise SystemExit(f"{directory}: its autoencoder config differs from the bundle's")
    for (name, a), b in zip(ae.encoder.state_dict().items(), like.autoencoder.encoder.state_dict().values()):
        if not torch.equal(a, b):
            raise SystemExit(f"{directory}: encoder weight {name} differs from the bundle's: not a decoder-only run")
    return ae


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/doom-gpu")
    ap.add_argument("--data", required=True, help="held-out dataset (magworld data record ... --seed 2)")
    ap.add_argument("--decoder", action="append", default=[], metavar="NAME=DIR",
                    help="a decoder-only run's checkpoint to compare with the bundle's decoder")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--png", help="write the picture here")
    ap.add_argument("--scale", type=int, default=2, help="pixels a frame's pixel takes in the picture")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = WorldModel.load(args.checkpoint, "cpu")
    decoders = {"bundle": model.autoencoder}
    for spec in args.decoder:
        name, _, directory = spec.partition("=")
        decoders[name] = decoder_run(directory, model)
    bf = model.config.model.block_frames
    clips = ClipDataset(args.data, 4 * bf, block_frames=bf, split="heldout", seed=0)
    truth, real, generated = [], [], []
    for clip in itertools.islice(iter(clips), 0, 10 * args.clips, 10):
        frames, actions = clip["frames"][None], clip["actions"][None]
        latents = model.encode(frames)
        roll = model.rollout("window")
        for j in range(0, 3 * bf, bf):
            roll.observe(latents[:, j:j + bf], actions[:, j:j + bf])
        gen = roll.generate(actions[:, 3 * bf:], generator=torch.Generator().manual_seed(0))
        truth.append(frames[0, 3 * bf:])
        real.append(latents[0, 3 * bf:])
        generated.append(gen[0])
    truth, real, generated = torch.cat(truth), torch.cat(real), torch.cat(generated)
    engine_sharp = float(sharpness(truth.permute(0, 3, 1, 2)).mean())
    rows = []
    print(f"{len(truth)} frames of {args.clips} held-out clips; engine sharpness {engine_sharp:.0f}")
    print(f"{'decoder':10s} {'recon dB':>8s} {'sharp':>6s} {'gen dB':>7s} {'sharp':>6s}")
    with torch.no_grad():
        for name, ae in decoders.items():
            out = [frames_to_uint8(ae.decode(z)) for z in (real, generated)]  # [N, 3, H, W]
            scores = [(float(psnr(o, truth.permute(0, 3, 1, 2)).mean()),
                       float(sharpness(o).mean()) / engine_sharp) for o in out]
            print(f"{name:10s} {scores[0][0]:8.2f} {scores[0][1]:6.3f} {scores[1][0]:7.2f} {scores[1][1]:6.3f}")
            rows.append((name, out, scores))
    if args.png:
        picture(truth, rows, args.png, scale=args.scale)


def picture(truth, rows, path, frames=(0, 4, 8), scale=2):
    """Row 0: the engine; then per decoder, for a few frames: reconstruction | generated."""
    h, w = truth.shape[1] * scale, truth.shape[2] * scale

    def image(arr):
        return Image.fromarray(np.ascontiguousarray(arr)).resize((w, h), Image.NEAREST)

    label = 110
    cols = 2 * len(frames)
    canvas = Image.new("RGB", (label + cols * (w + 4), (len(rows) + 1) * (h + 4) + 14), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label, 1), "per frame: true latents decoded | generated latents decoded", fill="black")
    y = 14
    draw.text((2, y + h // 2), "engine", fill="black")
    for i, f in enumerate(frames):
        canvas.paste(image(truth[f].numpy()), (label + 2 * i * (w + 4), y))
    for name, out, scores in rows:
        y += h + 4
        draw.text((2, y + h // 2 - 12), name, fill="black")
        draw.text((2, y + h // 2), f"{scores[0][0]:.1f}/{scores[1][0]:.1f} dB", fill="black")
        draw.text((2, y + h // 2 + 12), f"sharp {scores[0][1]:.2f}/{scores[1][1]:.2f}x", fill="black")
        for i, f in enumerate(frames):
            for k in range(2):
                canvas.paste(image(out[k][f].permute(1, 2, 0).numpy()), (label + (2 * i + k) * (w + 4), y))
    canvas.save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
