"""The revisit evaluation scores exactly the revisit frames, per strategy, on the same cases."""

import numpy as np
import pytest

from worldmodel.bundle import WorldModel
from worldmodel.config import preset
from worldmodel.data.revisit import RevisitCase
from worldmodel.eval.revisit import revisit_benchmark, run_case


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    n, m = 18, 9
    frames = rng.integers(0, 255, (n, 24, 32, 3), dtype=np.uint8)
    frames[12] = frames[3]  # the camera is back where it was at frame 3
    poses = np.zeros((n, 5), np.float32)
    poses[:, 3] = np.r_[np.arange(m) * 10.0, 80 - np.arange(n - m) * 10.0]
    return RevisitCase("c0", "freedoom2.wad:MAP07", -1, "look-around", m, [(12, 3), (17, 0)],
                       frames, np.zeros((n, 4), np.float32), poses)


def test_every_revisit_frame_is_scored_and_copy_last_is_the_baseline(case):
    model = WorldModel.random(preset("tiny"))
    res = run_case(model, case, "full")
    assert [r["frame"] for r in res["rows"]] == [12, 17]
    assert [r["since_seen"] for r in res["rows"]] == [9, 17]
    for r in res["rows"]:
        assert np.isfinite([r["gt_psnr"], r["hist_psnr"], r["copy_last_psnr"]]).all()
    # frame 12 is the same picture as memorize frame 3: the history comparison can reach the cap
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
