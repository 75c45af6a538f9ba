"""`magworld play`: walk through a world that exists only in the model (docs/explorer.md)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


def register(sub):
    p = sub.add_parser(
        "play",
        help="explore the world model in a window (Pygame)",
        description="magworld play: a Pygame window on a world model. Connects to a runtime at --connect, or "
        "starts `magworld serve` itself (CUDA if torch sees a GPU, else CPU) and stops it on exit. "
        "Keys: arrows/WASD turn and move, Q/E strafe, PgUp/PgDn look, R reset, P pause, N step, F1 help, "
        "F12 screenshot, V record, M memory view, Esc quit (docs/explorer.md).",
    )
    p.add_argument("--connect", metavar="ADDR", help="runtime endpoint, e.g. tcp://127.0.0.1:5555 "
                   "(default: start one in a child process)")
    p.add_argument("--checkpoint", help="checkpoint for the runtime it starts (default: the shipped model)")
    p.add_argument("--preset", help="with --random-weights: serve untrained weights of this preset (tests)")
    p.add_argument("--random-weights", action="store_true", help="with --preset: untrained weights")
    p.add_argument("--device", help="device of the runtime it starts (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads of the runtime it starts (default: torch's). On a "
                   "2-core machine that is busy with something else, --threads 1 avoids 10-30x slower blocks")
    p.add_argument("--truth", action="store_true",
                   help="run the real ViZDoom beside the model on the same actions, with per-frame PSNR")
    p.add_argument("--map", default="freedoom2.wad:MAP01", help="<wad>:<map> of the start frames and the truth")
    p.add_argument("--start-images", nargs="+", metavar="IMAGE",
                   help="start from these images (in order) instead of engine frames")
    p.add_argument("--start-blocks", type=int, default=1, help="blocks of engine frames to start from")
    p.add_argument("--scale", type=int, help="initial integer scale of the frames (the window is resizable)")
    p.add_argument("--fps", type=float, help="frames per second to play at (default: the model's)")
    p.add_argument("--mouse", action="store_true", help="mouse look (grabs the pointer; Esc quits)")
    p.add_argument("--record", metavar="PATH", help="record the frames to this mp4 from the start")
    p.add_argument("--captures", default="magworld-captures", help="folder for F12 screenshots and V recordings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scene", type=int, help="scene id to condition on (default: the map's, when the model has it)")
    p.add_argument("--script", metavar="FILE",
                   help="headless scripted run: a JSON list of [tick, [keys held]] (pygame key names), "
                   "or 'demo'; requests are synchronous and the clock is not waited for")
    p.add_argument("--frames", type=int, help="stop after this many generated frames (rounded up to whole blocks)")
    p.add_argument("--realtime", action="store_true", help="with --script: still play at --fps")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window when the run ends")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one runtime reply")
    p.set_defaults(func=run)


JSON_TYPES = {dict: "object", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def load_script(value: str):
    """'demo' or a JSON file -> [(tick, [key names])]; raises ValueError naming what is wrong."""
    from game.explorer import DEMO_SCRIPT
    from game.keymap import KNOWN_KEYS

    if value == "demo":
        return DEMO_SCRIPT
    where = f"--script {value}"
    try:
        data = json.loads(Path(value).read_text())
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # json.JSONDecodeError
        raise ValueError(f"{where} is not valid JSON: {e}") from None
    form = 'a JSON list of [tick, [key names]], e.g. [[0, ["w"]], [30, ["w", "left"]], [60, []]]'
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected {form}, got a JSON {JSON_TYPES.get(type(data), 'value')}")
    script = []
    for i, entry in enumerate(data):
        if not (isinstance(entry, list) and len(entry) == 2):
            raise ValueError(f"{where}: entry {i} is {json.dumps(entry)[:60]}; expected {form}")
        tick, keys = entry
        if isinstance(tick, bool) or not isinstance(tick, int) or tick < 0:
            raise ValueError(f"{where}: entry {i}: the tick must be a whole number >= 0, got {json.dumps(tick)}")
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise ValueError(f"{where}: entry {i}: the keys must be a list of key names, got {json.dumps(keys)[:60]}")
        unknown = [k for k in keys if k not in KNOWN_KEYS]
        if unknown:
            raise ValueError(f"{where}: entry {i}: unknown key {unknown[0]!r}; keys that do something: "
                             f"{', '.join(sorted(KNOWN_KEYS))}")
        script.append((tick, keys))
    return script


def run(args: argparse.Namespace) -> int:
    if args.script and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless scripted runs need no screen
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from game.connection import Connection, RuntimeFailure, ServerProcess
    from game.explorer import Explorer, Options
    from game.start_frames import from_images
    from game.truth import TruthEngine

    if args.fps is not None and not (math.isfinite(args.fps) and args.fps > 0):
        print(f"magworld play: --fps must be a positive number of frames per second, got {args.fps:g}", file=sys.stderr)
        return 2
    if args.truth and args.start_images:
        print("magworld play: --truth needs the engine's own start frames; drop --start-images", file=sys.stderr)
        return 2
    try:
        script = load_script(args.script) if args.script else None
    except ValueError as e:
        print(f"magworld play: {e}", file=sys.stderr)
        return 2
    import pygame

    server = None
    conn = truth = explorer = None
    try:
        if args.connect:
            endpoint = args.connect
        else:
            server = ServerProcess(args.checkpoint, args.preset, args.random_weights, args.device,
                                   extra=["--threads", str(args.threads)] if args.threads else None)
            print(f"magworld play: starting the runtime on {server.device} ({server.endpoint}) …", file=sys.stderr)
            server.wait_ready()
            endpoint = server.endpoint
        conn = Connection(endpoint, timeout_s=args.timeout)
        info = conn.fetch_info()
        print(f"magworld play: {info.model} on {info.backend}/{info.device}, {info.width}x{info.height}, "
              f"blocks of {info.block_size} at {info.fps:g} frames/s", file=sys.stderr)
        if args.start_images:
            seq = from_images(args.start_images, info.block_size, info.height, info.width)
            start = lambda: seq  # noqa: E731
        elif args.truth:
            truth = TruthEngine(args.map, info.height, info.width, seed=args.seed)
            start = lambda: truth.start(info.block_size, args.start_blocks)  # noqa: E731
        else:
            engine = TruthEngine(args.map, info.height, info.width, seed=args.seed)
            seq = engine.start(info.block_size, args.start_blocks)
            engine.close()
            start = lambda: seq  # noqa: E731
        options = Options(scale=args.scale, fps=args.fps, record=args.record, capture_dir=Path(args.captures),
                          mouse=args.mouse, seed=args.seed, scene=args.scene, screenshot=args.screenshot,
                          realtime=True if args.realtime else None)
        explorer = Explorer(conn, info, start, truth, options)
        max_blocks = math.ceil(args.frames / info.block_size) if args.frames else None
        # Without --frames a script ends at its last entry (which may also press Esc).
        max_ticks = max((t for t, _ in script), default=0) + 1 if script is not None and not max_blocks else None
        explorer.run(script=script, max_blocks=max_blocks, max_ticks=max_ticks)
        print(f"magworld play: {explorer.summary()}", file=sys.stderr)
        return 1 if script is not None and explorer.errors else 0
    except pygame.error as e:
        print(f"magworld play: no window could be opened ({e}). Run it on a desktop, or headless with "
              "--script FILE (docs/explorer.md).", file=sys.stderr)
        return 1
    except (RuntimeError, ValueError, *RuntimeFailure) as e:
        print(f"magworld play: {e}", file=sys.stderr)
        return 1
    finally:
        if conn is not None and (explorer is None or explorer.runtime_idle):
            conn.close()
        if truth is not None:
            truth.close()
        if server is not None:
            server.stop()
        pygame.quit()
