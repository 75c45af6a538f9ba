"""Action-following metrics: a predictor that reacts to the turn shows a difference, one that ignores
the actions shows none; `eval turns` and `eval next-block` run on a teacher alone."""

import json

import numpy as np
import pytest
import torch

from worldmodel.bundle import WorldModel
from worldmodel.cli import main
from worldmodel.config import preset
from worldmodel.eval.counterfactual import counterfactual_actions, derangement, mirror_turns
from worldmodel.eval.prediction import next_block
from worldmodel.eval.turns import make_turn_cases, turn_eval
from worldmodel.model import CausalDiT
from worldmodel.train import checkpoint as ckpt
from worldmodel.train.synthetic import SyntheticClips


class ShiftStub:
    """A predictor whose next block is the last observed latent frame shifted sideways by the sign
    of the turn (react=True), or simply repeated (react=False): action-dependent by construction."""

    def __init__(self, cfg, react: bool):
        self.cfg, self.react, self.last = cfg.model, react, None

    def reset(self):
        self.last = None

    def observe(self, latents, actions, poses=None, scene=None):
        self.last = latents[:, -1]

    def generate(self, actions, scene=None, poses=None, noise=None, generator=None):
        frames = []
        x = self.last
        for t in range(actions.shape[1]):
            turn = float(actions[0, t, 0])
            if self.react and turn != 0:
                x = torch.roll(x, shifts=1 if turn > 0 else -1, dims=-1)
            frames.append(x)
        self.last = x
        return torch.stack(frames, 1)


@pytest.fixture(scope="module")
def model():
    return WorldModel.random(preset("tiny"))


def test_mirroring_negates_only_the_turn_and_shuffling_moves_every_case():
    a = torch.tensor([[5.0, 2.0, 10.0, -3.0]])
    assert mirror_turns(a).tolist() == [[-5.0, 2.0, 10.0, -3.0]]
    rng = np.random.default_rng(0)
    for n in (2, 3, 7):
        perm = derangement(n, rng)
        assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
    cases = [torch.full((3, 4), float(i)) for i in range(4)]
    assert all(not torch.equal(s, c) for s, c in zip(counterfactual_actions("shuffled", cases), cases))
    with pytest.raises(ValueError, match="at least 2 cases"):
        derangement(1, rng)


def test_next_block_difference_is_nonzero_for_a_reacting_predictor_and_zero_for_one_that_ignores(model):
    clips = SyntheticClips(12, 24, 32, num_clips=4)
    cfg = model.config
    result = next_block(model, clips, 4, 3, {"reacts": ShiftStub(cfg, True), "ignores": ShiftStub(cfg, False)})
    r = result["results"]
    for kind in ("mirrored turns", "shuffled"):
        reacts, ignores = r["reacts"]["actions"][kind], r["ignores"]["actions"][kind]
        assert reacts["cases"] == ignores["cases"] == 4
        assert abs(reacts["delta_db"]) > 1e-3 and reacts["true_vs_counterfactual_psnr"]["mean"] < 50
        assert not reacts["ignores_actions"]
        assert ignores["delta_db"] == 0 and ignores["true_vs_counterfactual_psnr"]["mean"] == 60
        assert ignores["ignores_actions"]
    assert {"copy-last", "ae-ceiling"} <= set(r)
    assert result["truth_sharpness"] > 0
    assert r["ignores"]["sharpness"]["ratio_to_truth"] > 0


@pytest.fixture(scope="module")
def turn_cases(model):
    a = model.config.autoencoder
    return make_turn_cases(2, 3, 1, 6, 11.25, a.frame_height, a.frame_width, seed=3)


def test_turn_cases_turn_the_way_they_say_from_one_context(turn_cases):
    for case in turn_cases:
        start = case.context_poses[-1]
        assert case.frames["left"].shape == (6, 24, 32, 3) and case.context.shape == (3, 24, 32, 3)
        turned = lambda b: (case.poses[b][-1, 3] - start[3] + 180) % 360 - 180  # noqa: E731
        assert turned("left") == pytest.approx(6 * 11.25, abs=0.5)
        assert turned("right") == pytest.approx(-6 * 11.25, abs=0.5)
        assert np.allclose(case.poses["still"][:, :4], start[:4])


def test_turn_eval_tells_a_reacting_predictor_from_one_that_ignores_the_keys(model, turn_cases):
    cfg = model.config
    res = turn_eval(model, {"reacts": ShiftStub(cfg, True), "ignores": ShiftStub(cfg, False)}, turn_cases)
    s = res["summary"]
    assert s["reacts"]["left_vs_right_psnr"] < 50 and abs(s["reacts"]["delta_db"]) > 1e-3
    assert s["ignores"]["left_vs_right_psnr"] == 60 and s["ignores"]["delta_db"] == 0 and s["ignores"]["ignores_actions"]
    assert len(res["per_case"][0]["predictors"]["reacts"]["psnr_vs_engine"]["left"]) == 6
    assert s["copy-last"]["psnr_vs_engine"]["still"] > s["copy-last"]["psnr_vs_engine"]["left"]
    # the geometric yardstick: the last frame turned by the engine's yaw follows the turn
    turn = s["turn-last"]
    assert turn["delta_db"] > 0.5 and turn["psnr_turns_vs_engine"] > s["copy-last"]["psnr_turns_vs_engine"]
    assert turn["psnr_vs_engine"]["still"] == s["copy-last"]["psnr_vs_engine"]["still"]
    for row in ("reacts", "ignores"):  # the implied turn is reported beside the engine's
        assert len(s[row]["implied_yaw"]["left"]) == 3 and s[row]["engine_yaw"]["left"][0] == pytest.approx(11.25, abs=0.5)
        assert s[row]["turn_followed"] >= 0


def test_turning_a_frame_moves_its_columns_the_way_the_view_turns():
    from worldmodel.eval.reprojection import turn_frame, yaw_change

    frame = np.zeros((4, 160, 3), np.uint8)
    frame[:, 80] = 255  # a bright column just right of the centre
    assert np.array_equal(turn_frame(frame, 0.0), frame)
    moved = lambda yaw: int(turn_frame(frame, yaw)[0, :, 0].argmax())  # noqa: E731
    assert moved(10.0) > 80 > moved(-10.0)  # turning left brings what was left to the centre
    assert moved(10.0) - 80 == pytest.approx(80 * np.tan(np.radians(10)), abs=1.5)  # f = 80 px at 90°
    assert yaw_change(np.array([[0, 0, 0, 350.0, 0], [0, 0, 0, 20.0, 0]]), np.array([0, 0, 0, 10.0, 0])).tolist() \
        == [-20.0, 10.0]


def test_the_engines_field_of_view_is_the_one_the_yardstick_assumes():
    from worldmodel.eval.reprojection import turn_frame, yaw_change

    cases = make_turn_cases(2, 3, 1, 3, 11.25, 120, 160, seed=5)

    def score(fov):
        out = []
        for case in cases:
            for b in ("left", "right"):
                yaw = yaw_change(case.poses[b][:1], case.context_poses[-1])[0]
                guess = turn_frame(case.context[-1], yaw, fov).astype(np.float64)
                out.append(-((guess - case.frames[b][0]) ** 2).mean())
        return np.mean(out)

    assert score(90) > max(score(75), score(105))


def test_the_implied_turn_reads_the_angle_from_the_frames_blurred_or_not():
    from PIL import Image, ImageFilter

    from worldmodel.eval.reprojection import implied_yaw

    case = make_turn_cases(1, 3, 1, 3, 11.25, 120, 160, seed=6)[0]
    last = case.context[-1]
    blur = lambda f: np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(3)))  # noqa: E731
    for branch, sign in (("left", 1), ("right", -1)):
        for t in range(2):
            want = sign * 11.25 * (t + 1)
            assert implied_yaw(last, case.frames[branch][t]) == pytest.approx(want, abs=1.6)
            assert implied_yaw(last, blur(case.frames[branch][t])) == pytest.approx(want, abs=2.3)
    assert implied_yaw(last, case.frames["still"][0]) == 0.0


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, model):
    """A teacher checkpoint as `magworld train teacher` writes it (config + teacher weights, no
    autoencoder), and an autoencoder checkpoint beside it."""
    root = tmp_path_factory.mktemp("runs")
    model.save(root / "ae")
    teacher = root / "teacher" / "checkpoint"
    teacher.mkdir(parents=True)
    ckpt.save_config(teacher, model.config)
    ckpt.save_weights(teacher, "teacher", CausalDiT(model.config.model).state_dict())
    return root / "teacher", root / "ae"


def test_a_teacher_alone_is_evaluated_by_next_block_and_turns(teacher_run, tmp_path):
    teacher, ae = teacher_run
    out = tmp_path / "nb.json"
    assert main(["eval", "next-block", "--teacher", str(teacher), "--autoencoder", str(ae), "--data", "synthetic",
                 "--cases", "2", "--teacher-steps", "2", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert set(rows) == {"teacher (2 steps)", "copy-last", "ae-ceiling"}
    assert set(rows["teacher (2 steps)"]["actions"]) == {"mirrored turns", "shuffled"}

    assert main(["eval", "turns", "--teacher", str(teacher), "--autoencoder", str(ae), "--cases", "1",
                 "--context-blocks", "1", "--turn-frames", "3", "--teacher-steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "turns")]) == 0
    detail = json.loads((tmp_path / "turns" / "turns.json").read_text())
    assert set(detail["summary"]) == {"teacher (2 steps)", "copy-last", "turn-last", "engine"}
    from PIL import Image

    strip = Image.open(tmp_path / "turns" / "turns_strip.png")
    assert strip.width > 4 * 32 and strip.height > 7 * 24  # 7 rows of 1 + 3 frames, with labels


def test_a_teacher_without_an_autoencoder_is_refused_in_one_line(teacher_run):
    teacher, _ = teacher_run
    with pytest.raises(ValueError, match="add --autoencoder"):
        main(["eval", "turns", "--teacher", str(teacher), "--cases", "1", "--device", "cpu"])
    with pytest.raises(ValueError, match="give --checkpoint"):
        main(["eval", "next-block", "--data", "synthetic", "--device", "cpu"])


def test_motion_kinds_read_the_poses_not_the_keys():
    from worldmodel.eval.motion import motion_kinds

    ref = torch.tensor([10.0, 20.0, 0.0, 179.0, 0.0])  # x, y, z, angle, pitch
    poses = torch.tensor([[10.0, 20.0, 0.0, 179.0, 0.0],     # nothing changed
                          [10.3, 20.0, 0.0, -179.0, 0.0],    # 2 degrees across the +-180 seam, 0.3 units
                          [10.0, 20.0, 0.0, 179.0, 3.0],     # looked up
                          [14.0, 23.0, 0.0, 179.0, 0.0]])    # walked 5 units
    assert motion_kinds(ref, poses) == ["still", "turning", "turning", "moving"]


def test_next_block_splits_each_rows_psnr_by_what_the_camera_did(model):
    clips = SyntheticClips(12, 24, 32, num_clips=4)
    result = next_block(model, clips, 4, 3, {"ignores": ShiftStub(model.config, False)})
    for name, row in result["results"].items():
        parts = row["psnr_by_motion"]
        assert parts and set(parts) <= {"still", "turning", "moving"}, name
        assert sum(p["n"] for p in parts.values()) == row["psnr"]["n"]  # every frame in exactly one kind
        weighted = sum(p["mean"] * p["n"] for p in parts.values()) / row["psnr"]["n"]
        assert weighted == pytest.approx(row["psnr"]["mean"])
