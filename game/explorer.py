"""The explorer loop: keys -> action rows -> `step` -> frames on screen, one tick per frame.

Each tick (1/fps of a second; the model's frame rate):

1. read the keys (the keyboard, or a script of key states by tick);
2. act on commands (reset, pause, step, help, screenshot, record, memory view, quit);
3. sample one action row from the held keys; when a block of B rows is ready and the runtime is
   free, send `step` (and, in truth mode, perform the same rows in ViZDoom);
4. take in finished requests: generated blocks go to the display queue;
5. show the next queued frame, and draw the HUD.

Requests run on one worker thread, so the window never waits on the model; every request has a
timeout (game/connection.py). A scripted run (tests, screenshots) makes each request synchronous
and does not wait for the clock, so it is deterministic: while the explorer is not paused,
tick t samples the action row of frame t.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pygame

from game import hud
from game.connection import ModelInfo, RuntimeFailure
from game.keymap import Rates, action_row, commands
from game.memory_view import MemoryView
from game.recorder import Recorder
from game.start_frames import StartSequence
from game.truth import psnr

Script = list[tuple[int, Iterable[str]]]  # (tick, the keys held from that tick on)

# A short demo for headless runs and screenshots: stand, pan left 90° and back (the return is a
# revisit of the start view), then walk and turn. Ticks are frames while nothing pauses.
DEMO_SCRIPT: Script = [
    (0, []), (3, ["left"]), (19, ["right"]), (35, []), (38, ["w"]), (56, ["w", "left"]), (62, ["w"]), (80, []),
]


@dataclass
class Options:
    scale: int | None = None  # initial integer scale of the frames (default: about 480 rows)
    fps: float | None = None  # ticks per second (default: the model's frame rate)
    rates: Rates = field(default_factory=Rates)
    record: Path | None = None  # record from the start to this mp4
    capture_dir: Path = Path("magworld-captures")  # F12 screenshots and V recordings
    mouse: bool = False  # mouse look (grabs the pointer)
    seed: int = 0
    scene: int | None = None
    realtime: bool | None = None  # wait for the clock (default: live yes, scripted no)
    screenshot: Path | None = None  # a PNG of the window when the run ends


class _Worker:
    """Runs runtime requests one at a time on a daemon thread (or inline, for scripted runs), so
    neither the window nor quitting ever waits on a runtime that does not answer."""

    def __init__(self, sync: bool):
        self.sync = sync
        self.jobs: queue.Queue = queue.Queue()
        self.thread = None
        if not sync:
            self.thread = threading.Thread(target=self._serve, name="magworld-runtime", daemon=True)
            self.thread.start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except Exception as e:
                    future.set_exception(e)

    def submit(self, fn, *args) -> Future:
        f = Future()
        if self.thread is not None:
            self.jobs.put((f, fn, args))
            return f
        try:
            f.set_result(fn(*args))
        except Exception as e:
            f.set_exception(e)
        return f

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Stop after the request in flight; True if the thread finished within the timeout."""
        if self.thread is None:
            return True
        while True:  # drop what has not started
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        self.jobs.put(None)
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


class Explorer:
    def __init__(self, conn, info: ModelInfo, start: Callable[[], StartSequence], truth=None,
                 options: Options | None = None):
        """conn: game.connection.Connection (or anything with its methods); start() -> the start
        frames of a session (called on every reset); truth: game.truth.TruthEngine or None."""
        self.conn, self.info, self.start, self.truth = conn, info, start, truth
        self.opt = options or Options()
        self.B = info.block_size
        self.fps = self.opt.fps or info.fps
        # What happened, for tests and the end-of-run summary.
        self.sent: list[np.ndarray] = []  # action rows of every step sent, [B, A] each
        self.sent_ticks: list[int] = []  # the tick each step was sent at
        self.first_frames: list[int] = []  # first frame index of every block received
        self.events: list[tuple[int, str]] = []  # (tick, what)
        self.errors: list[str] = []
        self.blocks_received = 0
        self.frames_shown = 0
        self.recordings: list[Path] = []
        self.screenshots: list[Path] = []
        self.runtime_idle = True

    # ------------------------------------------------------------------ the loop

    def run(self, script: Script | None = None, max_blocks: int | None = None,
            max_ticks: int | None = None) -> "Explorer":
        scripted = script is not None
        script = sorted(((int(t), frozenset(k)) for t, k in (script or [])), key=lambda e: e[0])
        realtime = (not scripted) if self.opt.realtime is None else self.opt.realtime
        self._open_window()
        self.worker = _Worker(sync=scripted)
        self.pending: deque = deque()  # (kind, future, data, epoch), in submission order
        self.rows: deque = deque(maxlen=self.B)
        self.queue: deque = deque()  # (dream [H, W, 3], truth [H, W, 3] or None, revisit or None) to show
        self.epoch = 0
        self.paused = self.help = False
        self.memory: MemoryView | None = None
        self.memory_closed: MemoryView | None = None  # the view last closed: its decoded slots are kept
        self.revisit_view: tuple[dict, np.ndarray] | None = None  # (revisit report, its slot decoded [H, W, 3])
        self.recorder: Recorder | None = None
        self.recording_since = 0.0
        self.stats = hud.Stats(bytes_per_slot=self.info.bytes_per_slot)
        self.current = None
        self.blocks_sent = 0
        self.running = True
        self.tick = 0
        pressed: frozenset = frozenset()
        next_entry = 0
        clock = pygame.time.Clock()
        if self.opt.mouse and not scripted:
            pygame.event.set_grab(True)
            pygame.mouse.set_visible(False)
            pygame.mouse.get_rel()
        if self.opt.record:
            self._start_recording(Path(self.opt.record))
        self._reset()
        try:
            while self.running:
                # 1. input
                mouse = (0.0, 0.0)
                if scripted:
                    pygame.event.pump()
                    now_pressed = pressed
                    while next_entry < len(script) and script[next_entry][0] <= self.tick:
                        now_pressed = script[next_entry][1]
                        next_entry += 1
                    cmds = commands(now_pressed, pressed)
                    pressed = now_pressed
                else:
                    pressed, cmds = self._poll_keyboard(pressed)
                    if self.opt.mouse:
                        mouse = pygame.mouse.get_rel()
                # 2. commands
                for cmd in cmds:
                    self._command(cmd, pressed)
                # 3. sample a row; send a block when one is due
                generating = not (self.paused or self.memory is not None)
                if generating:
                    self.rows.append(action_row(pressed, self.opt.rates, mouse))
                    done = max_blocks is not None and self.blocks_sent >= max_blocks
                    if len(self.rows) == self.B and not done and not self._busy("step") and len(self.queue) <= self.B:
                        self._send_step(np.stack(self.rows))
                        self.rows.clear()
                if self.memory is not None and not self.pending:
                    slot = self.memory.next_to_decode()
                    if slot is not None:
                        self.memory.decoding = slot
                        self._submit("decode", self.conn.decode_slot, slot["slot"], data=slot)
                # 4. finished requests
                self._collect()
                # 5. show and draw
                if self.queue:
                    self._show(*self.queue.popleft())
                self._draw()
                self.tick += 1
                if max_blocks is not None and self.blocks_received >= max_blocks and not self.queue \
                        and not self._busy("step"):
                    break
                if max_ticks is not None and self.tick >= max_ticks:
                    break
                if realtime:
                    clock.tick(self.fps)
            if self.opt.screenshot:
                self._screenshot(Path(self.opt.screenshot))
        finally:
            self._stop_recording()
            # False: a request is still in flight; its client socket must not be touched now.
            self.runtime_idle = self.worker.shutdown()
        return self

    # ------------------------------------------------------------------ input and commands

    def _poll_keyboard(self, pressed: frozenset) -> tuple[frozenset, list[str]]:
        held, cmds = set(pressed), []
        for ev in pygame.event.get():
            if ev.type == pygame.QUIT:
                cmds.append("quit")
            elif ev.type == pygame.KEYDOWN:
                name = pygame.key.name(ev.key)
                cmds += commands({name}, held)
                held.add(name)
            elif ev.type == pygame.KEYUP:
                held.discard(pygame.key.name(ev.key))
            elif ev.type == pygame.WINDOWFOCUSLOST:
                held.clear()  # keys released outside the window never send KEYUP
        return frozenset(held), cmds

    def _command(self, cmd: str, pressed) -> None:
        self.events.append((self.tick, cmd))
        if cmd == "quit":
            self.running = False
        elif cmd == "pause":
            self.paused = not self.paused
            self.rows.clear()  # a half-sampled block would mix before and after the pause
        elif cmd == "step":
            if self.paused and not self._busy("step"):
                self._send_step(np.stack([action_row(pressed, self.opt.rates)] * self.B))
        elif cmd == "reset":
            self._reset()
        elif cmd == "help":
            self.help = not self.help
        elif cmd == "screenshot":
            self._screenshot(self._capture_path("png"))
        elif cmd == "record":
            if self.recorder is None:
                self._start_recording(self._capture_path("mp4"))
            else:
                self._stop_recording()
        elif cmd == "memory":
            if self.memory is None:
                self.memory, self.memory_closed = self.memory_closed or MemoryView(), None
                self.rows.clear()
                self._submit("slots", self.conn.memory_slots)
            else:
                self.memory, self.memory_closed = None, self.memory
                self.memory_closed.decoding = None

    # ------------------------------------------------------------------ requests

    def _submit(self, kind: str, fn, *args, data=None) -> None:
        self.pending.append((kind, self.worker.submit(fn, *args), data, self.epoch))

    def _busy(self, kind: str) -> bool:
        return any(k == kind for k, *_ in self.pending)

    def _reset(self) -> None:
        self.epoch += 1  # results of requests sent before this are dropped
        self.rows.clear()
        self.queue.clear()
        seq = self.start()
        self.source = seq.source
        scene = self.opt.scene
        if scene is None and self.truth is not None:
            scene = self.truth.scene
        if scene is not None and not 0 <= scene < self.info.scenes:
            scene = None  # the model has no such scene: leave the condition empty
        self._submit("reset", self.conn.reset, seq.frames, seq.actions, seq.poses, self.opt.seed, scene, data=seq)
        self.stats = hud.Stats(bytes_per_slot=self.info.bytes_per_slot)
        self.stats.next_frame = len(seq.frames)
        if seq.poses is not None:
            self.stats.pose = tuple(float(v) for v in seq.poses[-1])
        last = seq.frames[-1]
        self.current = (last, last if self.truth is not None else None)
        self.memory_closed = None  # a new session: nothing decoded of it yet
        if self.memory is not None:
            self.memory = MemoryView()
            self._submit("slots", self.conn.memory_slots)

    def _send_step(self, rows: np.ndarray) -> None:
        truth_frames = poses = None
        if self.truth is not None:
            rows = self.truth.snap(rows)
            truth_frames, poses = self.truth.step(rows)
        self.sent.append(rows)
        self.sent_ticks.append(self.tick)
        self.blocks_sent += 1
        self._submit("step", self.conn.step, rows, poses, data=truth_frames)

    def _collect(self) -> None:
        """Take in finished requests, in the order they were sent."""
        while self.pending and self.pending[0][1].done():
            kind, fut, data, epoch = self.pending.popleft()
            try:
                result = fut.result()
            except RuntimeFailure as e:
                self._failed(kind, e)
                continue
            if epoch != self.epoch:
                continue
            if kind == "step":
                self.blocks_received += 1
                self.first_frames.append(result.first_frame)
                self.stats.block(result)
                last = len(result.frames) - 1
                for i, frame in enumerate(result.frames):
                    self.queue.append((frame, None if data is None else data[i], result.revisit if i == last else None))
                if result.revisit:
                    self.events.append((self.tick, "revisit"))
                    if "slot" in result.revisit:  # the memory's own view of that place, drawn beside the new one
                        self._submit("revisit-view", self.conn.decode_slot, result.revisit["slot"], data=result.revisit)
            elif kind == "reset":
                self.events.append((self.tick, "session"))
            elif kind == "slots" and self.memory is not None:
                self.memory.update_slots(result)
            elif kind == "decode" and (self.memory or self.memory_closed) is not None:
                (self.memory or self.memory_closed).add(data, result)  # also when closed meanwhile
            elif kind == "revisit-view":
                self.revisit_view = (data, result[-1])  # the decoded block's last frame is the slot's

    def _failed(self, kind: str, e: Exception) -> None:
        if kind == "revisit-view":
            return  # the slot was evicted before it could be decoded: the banner shows without the inset
        msg = f"{kind} failed: {e}"
        self.errors.append(msg)
        self.stats.error = msg
        if kind == "decode" and self.memory is not None:
            self.memory = None  # do not ask again every tick

    # ------------------------------------------------------------------ display

    def _open_window(self) -> None:
        pygame.display.init()
        driver = pygame.display.get_driver()
        if driver in ("offscreen", "dummy") and not os.environ.get("SDL_VIDEODRIVER"):
            # SDL found no display and fell back silently: say so, or the user waits on nothing.
            print(f"magworld play: no display found (SDL video driver {driver!r}): the window is invisible. "
                  "Run on a desktop, under xvfb-run, or with --screenshot FILE / --record FILE.", file=sys.stderr)
        pygame.display.set_caption("magworld — a world that exists only in the model")
        self.fonts = hud.Fonts()
        h, w = self.info.height, self.info.width
        panels = 2 if self.truth is not None else 1
        scale = self.opt.scale or max(1, min(480 // h, 1240 // (panels * w)))
        size = (max(760, panels * w * scale + (panels + 1) * 16), h * scale + 32 + hud.bar_height(self.fonts))
        self.screen = pygame.display.set_mode(size, pygame.RESIZABLE)

    def _layout(self) -> tuple[int, list[pygame.Rect], pygame.Rect]:
        """-> integer scale, one rect per panel (dream, truth), the HUD bar."""
        W, H = self.screen.get_size()
        bar = hud.bar_height(self.fonts)
        h, w = self.info.height, self.info.width
        panels = 2 if self.truth is not None else 1
        gap = 16
        scale = max(1, min((W - (panels + 1) * gap) // (panels * w), (H - bar - 2 * gap) // h))
        total = panels * w * scale + (panels - 1) * gap
        x0, y0 = (W - total) // 2, max(gap, (H - bar - h * scale) // 2)
        rects = [pygame.Rect(x0 + i * (w * scale + gap), y0, w * scale, h * scale) for i in range(panels)]
        return scale, rects, pygame.Rect(0, H - bar, W, bar)

    def _show(self, dream: np.ndarray, truth: np.ndarray | None, revisit: dict | None) -> None:
        self.current = (dream, truth)
        self.frames_shown += 1
        if revisit:
            self.stats.revisit_shown(revisit, self.frames_shown)
        if truth is not None:
            self.stats.truth(psnr(dream, truth))
        if self.recorder is not None:
            self.recorder.add(self._panel())

    def _panel(self) -> np.ndarray:
        dream, truth = self.current
        return dream if truth is None else np.concatenate([dream, truth], axis=1)

    def _draw(self) -> None:
        s = self.screen
        s.fill((32, 32, 38))
        scale, rects, bar = self._layout()
        if self.current is not None:
            for frame, rect in zip(self.current, rects):
                if frame is None:
                    continue
                surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
                s.blit(pygame.transform.scale(surf, rect.size), rect)
        hud.draw_label(s, self.fonts, rects[0], "DREAM (generated)")
        if self.truth is not None:
            hud.draw_label(s, self.fonts, rects[1], f"TRUTH (ViZDoom)  PSNR {hud._db(self.stats.truth_psnr)}",
                           hud.quality_color(self.stats.truth_psnr))
        if self.stats.showing_revisit(self.frames_shown):
            hud.draw_revisit(s, self.fonts, rects[0], self.stats)
            if self.revisit_view is not None and self.revisit_view[0] is self.stats.revisit:
                hud.draw_remembered(s, self.fonts, rects[0], self.revisit_view[0], self.revisit_view[1])
        flags = {"paused": self.paused, "source": getattr(self, "source", "?"), "truth": self.truth is not None}
        hud.draw_bar(s, self.fonts, bar, self.stats, self.info, flags)
        if self.recorder is not None:
            hud.draw_recording(s, self.fonts, time.monotonic() - self.recording_since)
        if self.memory is not None:
            self.memory.draw(s, self.fonts, pygame.Rect(0, 0, s.get_width(), bar.y), (self.info.width, self.info.height))
        if self.help:
            hud.draw_help(s, self.fonts)
        pygame.display.flip()

    # ------------------------------------------------------------------ captures

    def _capture_path(self, ext: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = len(self.screenshots) + len(self.recordings)
        return Path(self.opt.capture_dir) / f"magworld-{stamp}-{n}.{ext}"

    def _screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self.screen, str(path))
        self.screenshots.append(path)

    def _start_recording(self, path: Path) -> None:
        self.recorder = Recorder(path, self.fps)
        self.recording_since = time.monotonic()

    def _stop_recording(self) -> None:
        if self.recorder is not None:
            path = self.recorder.close()
            if path is not None:
                self.recordings.append(path)
            self.recorder = None

    def summary(self) -> str:
        s = self.stats
        parts = [f"{self.blocks_received} blocks, {self.frames_shown} frames shown"]
        if s.revisits:
            parts.append(f"{s.revisits} revisits")
        if s.truth_psnr_mean is not None:
            parts.append(f"mean PSNR vs ViZDoom {s.truth_psnr_mean:.2f} dB over {s.truth_frames} frames")
        parts += [f"recorded {p}" for p in self.recordings] + [f"screenshot {p}" for p in self.screenshots]
        if self.errors:
            parts.append(f"{len(self.errors)} runtime errors, last: {self.errors[-1]}")
        return "; ".join(parts)
