"""The revisit evaluation scores exactly the revisit frames, per strategy, on the same cases."""

import numpy as np
import pytest

from worldmodel.bundle import WorldModel
from worldmodel.config import preset
from worldmodel.data.revisit import RevisitCase
from worldmodel.eval.bootstrap import paired_bootstrap
from worldmodel.eval.revisit import revisit_benchmark, run_case, summarize


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    n, m = 18, 9
    frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    frames[12] = frames[5]  # the camera is back where it was at frame 5
    poses = np.zeros((n, 5), np.float32)
    poses[:, 3] = np.r_[np.arange(m) * 10.0, 80 - np.arange(n - m) * 10.0]
    return RevisitCase("c0", "freedoom2.wad:MAP07", -1, "look-around", m, [(12, 5), (17, 0)],
                       frames, np.zeros((n, 4), np.float32), poses)


def test_every_revisit_frame_is_scored_and_copy_last_is_the_baseline(case):
    model = WorldModel.random(preset("tiny"))
    res = run_case(model, case, "full")
    assert [r["frame"] for r in res["rows"]] == [12, 17]
    assert [r["since_seen"] for r in res["rows"]] == [7, 17]
    for r in res["rows"]:
        assert np.isfinite([r["gt_psnr"], r["hist_psnr"], r["copy_last_psnr"]]).all()
    # frame 12 is the same picture as memorize frame 5: the history comparison can reach the cap
    assert res["rows"][0]["copy_last_psnr"] < 60


def test_strategies_hold_the_kv_bytes_their_policy_says(case):
    model = WorldModel.random(preset("tiny"))
    result = revisit_benchmark(model, [case], ["none", "full", "mag"], max_cases=1, progress=False)
    table = result["table"]
    assert table["none"]["kv_bytes_held"] == 0
    assert table["mag"]["kv_bytes_held"] * 3 == table["full"]["kv_bytes_held"]
    assert table["copy-last"]["revisit_frames"] == 2
    with pytest.raises(ValueError, match="unknown strategy"):
        revisit_benchmark(model, [case], ["lru"], max_cases=1, progress=False)


def test_the_retrieval_ablations_attend_to_what_they_say(monkeypatch):
    """'mag (recent only)' asks the strategy without a pose (so it takes the newest slots);
    'mag (all slots)' gets an attention budget as large as the memory."""
    from worldmodel.memory.mag import MagMemory

    seen = []
    real = MagMemory.attend_slots

    def spy(self, memory, pose=None):
        seen.append((self.cfg.attention_budget, pose is None))
        return real(self, memory, pose)

    monkeypatch.setattr(MagMemory, "attend_slots", spy)
    rng = np.random.default_rng(1)
    n, m = 60, 45  # 15 memorised blocks: more slots than the tiny preset's attention budget
    frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    poses = np.zeros((n, 5), np.float32)
    poses[:, 3] = np.arange(n) * 6.0
    case = RevisitCase("c1", "freedoom2.wad:MAP07", -1, "look-around", m, [(57, 3)], frames,
                       np.zeros((n, 4), np.float32), poses)
    model = WorldModel.random(preset("tiny"))
    budget = model.config.memory.attention_budget
    for name, want_budget, want_no_pose in [("mag", budget, False), ("mag (recent only)", budget, True)]:
        seen.clear()
        revisit_benchmark(model, [case], [name], max_cases=1, progress=False)
        assert {s for s in seen} == {(want_budget, want_no_pose)}, name
    seen.clear()
    revisit_benchmark(model, [case], ["mag (all slots)"], max_cases=1, progress=False)
    assert all(b >= n for b, _ in seen)


def _result(kind, since_and_psnr, away=50):
    rows = [{"since_seen": t, "gt_psnr": p, "gt_ssim": p / 100, "copy_last_psnr": 10.0, "copy_last_ssim": 0.1}
            for t, p in since_and_psnr]
    return {"case": "c", "kind": kind, "away_frames": away, "rows": rows, "memory": {"bytes_held": 0}}


def test_the_headline_keeps_only_frames_seen_longer_ago_than_the_window_and_compares_in_pairs():
    # two cases: mag is 2 dB above window on the long-unseen frames, equal on the recent ones
    per = {
        "window": [_result("look-around", [(3, 30.0), (20, 20.0), (30, 20.0)]), _result("long-away", [(120, 18.0)], 150)],
        "mag": [_result("look-around", [(3, 30.0), (20, 22.0), (30, 22.0)]), _result("long-away", [(120, 21.0)], 150)],
    }
    h = summarize(per, min_since=9)
    assert h["rows"]["mag"]["frames"] == 3 and h["rows"]["window"]["cases"] == 2
    assert h["rows"]["mag"]["frame_mean_psnr"] == pytest.approx((22 + 22 + 21) / 3)
    assert h["rows"]["mag"]["case_mean_psnr"] == pytest.approx((22 + 21) / 2)
    assert h["rows"]["mag"]["all_frames_psnr"] == pytest.approx((30 + 22 + 22 + 21) / 4)
    assert h["rows"]["copy-last"]["frame_mean_psnr"] == pytest.approx(10.0)
    mw = next(c for c in h["comparisons"] if (c["a"], c["b"]) == ("mag", "window"))
    assert mw["frame_mean_diff"] == pytest.approx(7 / 3) and mw["case_mean_diff"] == pytest.approx(2.5)
    assert mw["cases_ahead"] == 2 and mw["frame_interval"][0] <= 7 / 3 <= mw["frame_interval"][1]
    assert not any(c["b"] == "full" for c in h["comparisons"]), "only rows that ran are compared"
    assert set(h["by_kind"]) == {"look-around", "long-away"}
    la = h["by_kind"]["long-away"]
    assert la["away_frames_min"] == 150 and la["rows"]["mag"]["frame_mean_psnr"] == pytest.approx(21.0)


def test_paired_bootstrap_resamples_cases_and_its_interval_covers_a_noisy_difference():
    rng = np.random.default_rng(0)
    b = [rng.normal(20, 2, n) for n in rng.integers(5, 40, 60)]
    a = [x + 1.0 + rng.normal(0, 1) for x in b]  # +1 dB with a per-case offset
    r = paired_bootstrap(a, b)
    assert r["frame_interval"][0] < 1.0 < r["frame_interval"][1]
    assert r["case_interval"][1] - r["case_interval"][0] > 0.1  # case-level noise widens it
    tight = paired_bootstrap([x + 1.0 for x in b], b)
    assert tight["frame_interval"] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="same frames"):
        paired_bootstrap([np.zeros(3)], [np.zeros(2)])
