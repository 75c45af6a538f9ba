"""`magworld eval rollout`: its scripts, and a short rollout of the shipped model with no key pressed
beside the real engine."""

import json

import numpy as np
import pytest

from worldmodel.cli import eval_rollout
from worldmodel.cli import main
from worldmodel.eval.long_rollout import SCRIPTS, scripted_actions


def test_the_still_script_presses_no_key_and_the_tour_turns_and_walks():
    assert not scripted_actions(90, 2, script="still").any()
    tour = scripted_actions(600, 2, seed=0)
    assert tour.shape == (600, 4) and (tour[:, 0] != 0).any() and (tour[:, 2] != 0).any()
    with pytest.raises(ValueError, match="unknown rollout script"):
        scripted_actions(9, 2, script="dance")


def test_the_cli_offers_the_scripts_the_rollout_knows():
    assert eval_rollout.SCRIPTS == SCRIPTS


def test_a_still_rollout_of_the_shipped_model_compares_first_and_last_minute(tmp_path):
    pytest.importorskip("vizdoom")
    out = tmp_path / "rollout.json"
    assert main(["eval", "rollout", "--checkpoint", "checkpoints/doom-gpu", "--device", "cpu", "--seconds", "2",
                 "--script", "still", "--out", str(tmp_path / "media"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["script"] == "still" and r["actions"] == {}  # no counterfactual of no action
    assert r["frames"] > 0 and np.isfinite(r["psnr_vs_engine_mean"])
    assert r["psnr_last_minus_first_minute"] == pytest.approx(
        r["psnr_vs_engine_last_minute"] - r["psnr_vs_engine_first_minute"])
    assert r["psnr_last_minute_minus_first_2s"] == pytest.approx(
        r["psnr_vs_engine_last_minute"] - r["psnr_vs_engine_first_2s"])
    assert (tmp_path / "media" / "rollout_strip.png").exists()
    assert r["turning"]["turned_frames"] == 0 and r["turning"]["turn_followed"] is None  # nothing turned
    assert r["stability"]["still_pairs"] > 0 and 0 < r["stability"]["frame_to_frame_psnr"] <= 60
    assert r["video"] == str(tmp_path / "media" / "rollout_vs_engine.mp4") and (tmp_path / "media" / "rollout_vs_engine.mp4").exists()


def test_without_ffmpeg_the_rollout_keeps_its_figures_and_writes_no_video(tmp_path, monkeypatch, capsys):
    from worldmodel.eval import long_rollout

    monkeypatch.setitem(__import__("sys").modules, "imageio_ffmpeg", None)  # import now raises ImportError
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    assert long_rollout._video(frames, frames, 10, tmp_path / "v.mp4") is None
    assert not (tmp_path / "v.mp4").exists() and "imageio-ffmpeg" in capsys.readouterr().err


def test_the_frame_to_frame_turn_of_the_engine_itself_is_its_own_turn():
    pytest.importorskip("vizdoom")
    from worldmodel.eval.engine_view import engine_settings
    from worldmodel.eval.long_rollout import engine_run
    from worldmodel.eval.reprojection import frame_to_frame_turns

    actions = np.zeros((30, 4), np.float32)
    actions[6:18, 0] = 11.25  # stand, turn left for 12 frames, stand
    frames, poses = engine_run(engine_settings("freedoom2.wad", "MAP07", 120, 160), actions, (120, 160))
    turns = frame_to_frame_turns(frames, poses)
    assert len(turns["frames"]) >= 10 and turns["turn_followed"] == pytest.approx(1.0, abs=0.15)
    frozen = frame_to_frame_turns(np.repeat(frames[:1], len(frames), 0), poses)  # a picture that never turns
    assert frozen["frames"] == turns["frames"] and frozen["turn_followed"] == 0.0
