"""The explorer loop against a real runtime (`magworld serve --preset tiny --random-weights`),
headless under SDL's dummy video driver, driven by scripts of held keys."""

import os

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from game.connection import Connection, ServerProcess  # noqa: E402
from game.explorer import Explorer, Options  # noqa: E402
from game.keymap import Rates  # noqa: E402
from game.truth import TruthEngine  # noqa: E402

R = Rates()


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(preset="tiny", random_weights=True, device="cpu", extra=["--threads", "1"])
    try:
        proc.wait_ready(120)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def start_sequence(server):
    conn = Connection(server.endpoint, timeout_s=30)
    info = conn.fetch_info()
    conn.client.close_socket()
    engine = TruthEngine("freedoom2.wad:MAP01", info.height, info.width)
    try:
        return engine.start(info.block_size)
    finally:
        engine.close()


@pytest.fixture
def make(server, start_sequence, tmp_path):
    """make(**options) -> an Explorer on a fresh session; closed after the test."""
    made = []

    def build(truth=None, **kw):
        conn = Connection(server.endpoint, timeout_s=30)
        info = conn.fetch_info()
        start = (lambda: truth.start(info.block_size)) if truth else (lambda: start_sequence)
        ex = Explorer(conn, info, start, truth, Options(capture_dir=tmp_path / "captures", **kw))
        made.append(conn)
        return ex

    yield build
    for conn in made:
        conn.close()


def count_frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path) as r:
        return sum(1 for _ in r), r.get_meta_data()


def test_held_keys_become_actions_at_their_rates(make, start_sequence):
    ex = make().run(script=[(0, ["left"]), (6, ["w"]), (12, [])], max_blocks=5)
    assert not ex.errors
    B = ex.B
    sent = np.stack(ex.sent)  # [blocks, B, 4]
    assert sent.shape == (5, B, 4)
    np.testing.assert_allclose(sent[:2].reshape(-1, 4), [[R.turn, 0, 0, 0]] * 2 * B)
    np.testing.assert_allclose(sent[2:4].reshape(-1, 4), [[0, 0, R.forward, 0]] * 2 * B)
    np.testing.assert_allclose(sent[4], 0)
    # One step per B frames, frames follow each other, and every frame reached the screen.
    assert ex.sent_ticks == [B - 1 + i * B for i in range(5)]
    assert ex.first_frames == [B * (i + 1) for i in range(5)]  # the start frames are frames 0..B-1
    assert ex.frames_shown == 5 * B
    # The runtime's pose turned left by exactly 2B frames of turning.
    start_angle = float(start_sequence.poses[-1][3])
    assert ex.stats.pose[3] == pytest.approx((start_angle + 2 * B * R.turn) % 360, abs=1e-3)


def test_pause_stops_generation_and_n_steps_one_block(make):
    B = 3
    script = [(0, []), (B, ["p"]), (B + 1, []), (10, ["n", "left"]), (11, ["left"]), (20, ["p", "left"]),
              (21, [])]
    ex = make().run(script=script, max_ticks=20 + 2 * B)
    assert not ex.errors and ex.B == B
    # Before the pause one block (ticks 0..B-1); while paused only the N step; after it, one block per B ticks.
    assert ex.sent_ticks == [B - 1, 10, 20 + B - 1, 20 + 2 * B - 1]
    np.testing.assert_allclose(ex.sent[1], [[R.turn, 0, 0, 0]] * B)  # N uses the keys held at that moment
    np.testing.assert_allclose(ex.sent[2][0], [R.turn, 0, 0, 0])  # tick 20: left still held
    np.testing.assert_allclose(ex.sent[2][1:], 0)
    assert [e for _, e in ex.events if e in ("pause", "step")] == ["pause", "step", "pause"]


def test_single_step_is_ignored_while_playing(make):
    ex = make().run(script=[(0, []), (1, ["n"]), (2, [])], max_ticks=6)
    assert ex.sent_ticks == [2, 5]


def test_reset_starts_again_from_the_start_frames(make):
    ex = make().run(script=[(0, ["left"]), (7, ["r"]), (8, [])], max_blocks=4)
    assert not ex.errors
    # Blocks at frames 3, 6 (session 1); the reset at tick 7 drops the half-sampled block; then 3, 6 again.
    assert ex.first_frames == [3, 6, 3, 6]
    assert ex.sent_ticks == [2, 5, 9, 12]
    assert [e for _, e in ex.events if e == "session"] == ["session", "session"]
    np.testing.assert_allclose(ex.sent[2], 0)  # keys released after the reset


def test_recording_writes_a_playable_mp4_of_the_frames_shown(make, tmp_path):
    path = tmp_path / "run.mp4"
    ex = make(record=path).run(script=[(0, ["right"])], max_blocks=4)
    assert ex.recordings == [path]
    n, meta = count_frames(path)
    assert n == ex.frames_shown == 12
    assert meta["fps"] == pytest.approx(ex.fps)
    assert meta["size"][1] >= 240 and meta["size"][0] % 2 == 0


def test_v_toggles_recording(make):
    # V down at tick 0, up again at tick 9: frames are shown from tick B-1 on, so ticks 2..8 -> 7 frames.
    ex = make().run(script=[(0, ["v"]), (1, []), (9, ["v"]), (10, [])], max_blocks=5)
    assert len(ex.recordings) == 1 and ex.recordings[0].suffix == ".mp4"
    assert count_frames(ex.recordings[0])[0] == 7


def test_f12_saves_a_screenshot_of_the_window(make):
    import pygame

    ex = make().run(script=[(0, []), (4, ["f12"])], max_blocks=2)
    (shot,) = ex.screenshots
    assert pygame.image.load(str(shot)).get_size() == ex.screen.get_size()


def test_memory_view_decodes_slots_and_holds_generation(make):
    ex = make()
    ex.run(script=[(0, ["w"]), (6, ["m", "w"]), (7, [])], max_ticks=20)
    assert not ex.errors
    assert ex.sent_ticks == [2, 5]  # nothing generated once the view is open
    held = ex.memory.slots
    assert len(held) >= 2 and len(ex.memory.images) == len(held)  # every slot decoded, one per tick
    img = next(iter(ex.memory.images.values()))
    assert img.shape == (ex.info.height, ex.info.width, 3) and img.dtype == np.uint8
    assert f"decoded {len(held)}/{len(held)}" in ex.memory.titles(len(held))[0]


def test_memory_view_keeps_decoded_slots_when_closed_and_reopened(make):
    ex = make()
    decoded = []
    decode = ex.conn.decode_slot
    ex.conn.decode_slot = lambda slot: decoded.append(slot) or decode(slot)
    # open at 6, close at 14 (every slot decoded by then), open again at 16
    ex.run(script=[(0, ["w"]), (6, ["m"]), (7, []), (14, ["m"]), (15, []), (16, ["m"]), (17, [])], max_ticks=24)
    assert not ex.errors and ex.memory is not None
    assert len(decoded) == len(ex.memory.slots) == len(set(decoded))  # each slot decoded once, not twice


def test_truth_mode_runs_vizdoom_on_the_same_actions(make, server):
    info = Connection(server.endpoint).fetch_info()
    truth = TruthEngine("freedoom2.wad:MAP01", info.height, info.width)
    try:
        ex = make(truth=truth).run(script=[(0, ["left", "w"])], max_blocks=3)
        assert not ex.errors
        # Every shown frame has a truth frame and a PSNR; the engine turned as much as the rows say.
        assert ex.stats.truth_frames == ex.frames_shown == 9
        assert 0 < ex.stats.truth_psnr_mean < 100
        turned = sum(float(r[0]) for rows in ex.sent for r in rows)
        assert turned == pytest.approx(9 * R.turn)
        # The runtime got the engine's poses: its pose is the engine's.
        np.testing.assert_allclose(ex.stats.pose, truth.pose, atol=1e-3)
    finally:
        truth.close()


def test_the_live_loop_runs_requests_off_the_ui_thread(make):
    # No script: the keyboard (none here) and a worker thread; the loop keeps ticking while waiting.
    ex = make(realtime=False).run(max_blocks=3)
    assert not ex.errors and ex.blocks_received == 3 and ex.frames_shown == 9
    assert ex.tick > ex.frames_shown


def test_play_command_runs_a_scripted_session(server, tmp_path):
    from worldmodel.cli import main

    shot, video = tmp_path / "shot.png", tmp_path / "demo.mp4"
    status = main(["play", "--connect", server.endpoint, "--script", "demo", "--frames", "9",
                   "--screenshot", str(shot), "--record", str(video)])
    assert status == 0 and shot.stat().st_size > 0
    assert count_frames(video)[0] == 9


def test_turning_back_to_a_remembered_view_shows_the_revisit_score(make):
    from game.explorer import DEMO_SCRIPT

    # The demo pans left 90° and back: the return is near the start view held in memory.
    ex = make().run(script=DEMO_SCRIPT, max_blocks=12)
    assert not ex.errors
    assert any(e == "revisit" for _, e in ex.events)
    assert ex.stats.revisits >= 1 and ex.stats.showing_revisit(ex.frames_shown)
    report = ex.stats.revisit
    assert report["frames_away"] > 0 and report["angle_difference"] <= 20
    assert report["vs_remembered_frame"]["ssim"] <= 1
    # the memory's decoded view of that slot came back for the inset beside the new view
    shown, frame = ex.revisit_view
    assert shown is report and frame.shape == (ex.info.height, ex.info.width, 3) and frame.dtype == np.uint8
    import pygame

    ex._draw()
    _, rects, _ = ex._layout()
    r = rects[0]
    w, h = r.width // 3, r.height // 3
    y = r.bottom - h - 8 - ex.fonts.small.get_linesize()
    inset = pygame.surfarray.array3d(ex.screen)[r.right - w - 8:r.right - 8, y:y + h].swapaxes(0, 1)
    assert np.abs(inset.mean((0, 1)) - frame.mean((0, 1))).max() < 3  # the decoded slot, scaled, is there


def test_keyboard_events_drive_the_live_loop(make):
    import pygame

    ex = make(realtime=False)
    poll = ex._poll_keyboard

    def poll_with_keys(pressed):
        if ex.tick == 0:  # a person presses Left, then Esc once a block has come back
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT, mod=0))
        if ex.blocks_received >= 1 and not ex._busy("step"):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0))
        return poll(pressed)

    ex._poll_keyboard = poll_with_keys
    ex.run(max_ticks=100000)
    assert (ex.events[-1][1]) == "quit" and not ex.errors
    np.testing.assert_allclose(ex.sent[0], [[R.turn, 0, 0, 0]] * ex.B)


def test_play_passes_threads_to_the_runtime_it_starts(monkeypatch):
    import game.connection
    from worldmodel.cli import main

    started = {}

    class Stop(Exception):
        pass

    def fake(*args, extra=None, **kwargs):
        started["extra"] = extra
        raise Stop  # nothing more is needed: the runtime's command line is made

    monkeypatch.setattr(game.connection, "ServerProcess", fake)
    with pytest.raises(Stop):
        main(["play", "--preset", "tiny", "--random-weights", "--device", "cpu", "--threads", "1",
              "--script", "demo", "--frames", "3"])
    assert started["extra"] == ["--threads", "1"]
