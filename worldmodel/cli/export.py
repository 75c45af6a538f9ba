"""`magworld export`: a checkpoint as ONNX graphs (and TensorRT engines) with a manifest."""

from __future__ import annotations

import sys


def register(sub):
    parser = sub.add_parser(
        "export",
        help="export ONNX graphs / TensorRT engines",
        description="Write static-shape graphs of one generator denoising step, the memory write, the latent "
        "decoder and the encoder, with the KV memory as explicit fixed-size inputs, plus manifest.json. "
        "--format tensorrt also builds TensorRT engines (needs TensorRT 10/11 and an NVIDIA GPU).",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (or a run directory)")
    parser.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx")
    parser.add_argument("--out", required=True, help="export directory (replaced)")
    parser.add_argument("--precision", default="fp32", help="fp32 | fp16 | bf16 (default fp32)")
    parser.add_argument("--strategy", help="memory strategy the graphs are made for (default: the checkpoint's)")
    parser.add_argument("--capacity", type=int, help="memory capacity in slots (S for strategies other than mag)")
    parser.add_argument("--attention-budget", type=int, help="slots attended per block (S for mag)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    parser.add_argument("--engine-cache", help="TensorRT engine cache directory (default: OUT/engines)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild TensorRT engines even when cached")
    parser.set_defaults(func=run)


def run(args) -> int:
    from export.manifest import ExportError
    from export.onnx_export import export_onnx

    overrides = [f"memory.{k}={v}" for k, v in (("strategy", args.strategy), ("capacity_frames", args.capacity),
                                                  ("attention_budget", args.attention_budget)) if v is not None]
    try:
        if args.format == "tensorrt":
            from export.tensorrt_build import import_tensorrt

            import_tensorrt()  # fail before the ONNX export, not after
        manifest = export_onnx(args.checkpoint, args.out, args.precision, overrides, args.opset, progress=print)
        if args.format == "tensorrt":
            from export.tensorrt_build import build_engines

            manifest = build_engines(args.out, args.engine_cache, args.rebuild, progress=print)
    except (ExportError, ValueError) as e:
        print(f"magworld export: {e}", file=sys.stderr)
        return 2
    mem = manifest["memory"]
    print(f"wrote {len(manifest['graphs'])} graphs ({args.precision}, opset {manifest['opset']}) to {args.out}; "
          f"memory: strategy {mem['strategy']}, {mem['slots']} attended slots, keeps frames {mem['kept_frames']}")
    return 0
