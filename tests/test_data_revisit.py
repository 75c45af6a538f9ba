"""Look-around returns exactly; revisit cases are laid out as documented; splits are sound."""

import numpy as np
import pytest

from worldmodel.data.engine import DoomEngine, EngineSettings
from worldmodel.data.policies import look_around_plan, reverse_plan
from worldmodel.data.revisit import LONG_AWAY_FRAMES, build_revisit_bench, find_revisits, last_seen, load_cases
from worldmodel.data.splits import all_maps, heldout_maps, scene_id, train_maps
from worldmodel.data.validate import check_dataset


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_splits_are_disjoint_and_scene_ids_small():
    assert set(train_maps()).isdisjoint(heldout_maps()) and len(heldout_maps()) >= 4
    assert len(all_maps()) < 64 and scene_id("freedoom2.wad:MAP01") >= 0 and scene_id("my.wad:X") == -1


def test_reverse_plan_undoes_turn_and_look():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 4)).astype(np.float32)
    r = reverse_plan(a)
    assert np.allclose(a[:, :2].sum(0) + r[:, :2].sum(0), 0, atol=1e-6)
    assert np.allclose(r[:-1, 2:], -a[::-1, 2:]) and np.all(r[-1, 2:] == 0)


@pytest.mark.parametrize("seed", range(4))
def test_look_around_returns_to_start_view(seed):
    engine = DoomEngine(EngineSettings("freedoom2.wad", "MAP01", seed=seed))
    rng = np.random.default_rng(seed)
    frame, pose = engine.reset()
    for _ in range(20):  # walk somewhere first, so that momentum must settle
        frame, pose, _ = engine.step(np.array([3.0, 0, 10.0, 0], np.float32))
    plan, marks = look_around_plan(rng, 2)
    frames, poses = [], []
    for a in plan:
        f, p, done = engine.step(a)
        assert not done
        frames.append(f)
        poses.append(p)
    engine.close()
    start, away, end = marks["start"], marks["away"], marks["end"]
    turned = abs((poses[away][3] - poses[start][3] + 180) % 360 - 180)
    assert turned > 5 or abs(plan[start + 1 : away + 1, 0].sum()) > 300  # it really looked away
    assert abs((poses[end][3] - poses[start][3] + 180) % 360 - 180) < 1.0
    assert abs(poses[end][4] - poses[start][4]) < 1.0
    assert psnr(frames[start], frames[end]) > 40
    assert psnr(frames[start], frames[away]) < 30  # the view in between differs


def test_revisit_bench_cases(tmp_path):
    cases = build_revisit_bench(tmp_path / "rv", cases=4, seed=1, progress=False)
    assert {c["map"] for c in cases} <= set(heldout_maps())
    assert check_dataset(tmp_path / "rv")[0] == []
    loaded = list(load_cases(tmp_path / "rv"))
    assert len(loaded) == 4
    for c in loaded:
        m = c.memorize_frames
        assert 0 < m < len(c.frames) and np.all(c.actions[0] == 0)
        assert c.revisits, "every case comes back to a memorised pose"
        for j, i in c.revisits:
            assert j >= m > i
            assert np.linalg.norm(c.poses[j, :3] - c.poses[i, :3]) < 1.0
        assert find_revisits(c.poses, m) == c.revisits
    # A look-around returns to the exact pose; its end frame matches the start unless the map
    # animates there (flickering lights, spinning keys), which is the world, not the camera.
    looks = [c for c in loaded if c.kind == "look-around"]
    assert all(np.array_equal(c.poses[0], c.poses[-1]) for c in looks)
    assert np.median([psnr(c.frames[0], c.frames[-1]) for c in looks]) > 40


def test_long_away_and_look_first_cases_return_exactly_and_say_how_long_they_were_away(tmp_path):
    import json

    listed = build_revisit_bench(tmp_path / "rv", cases=4, kinds=("long-away", "look-first"), seed=2, progress=False)
    assert check_dataset(tmp_path / "rv")[0] == []
    index = {c["name"]: c for c in json.loads((tmp_path / "rv" / "revisit.json").read_text())["cases"]}
    assert [c["kind"] for c in listed] == ["long-away", "look-first"] * 2
    for c in load_cases(tmp_path / "rv"):
        r, m = c.remembered, c.memorize_frames
        assert index[c.name]["away_frames"] == c.away_frames == len(c.frames) - 1 - r
        assert np.array_equal(c.poses[r], c.poses[-1]), "the last frame is back at the remembered pose"
        since = [j - last_seen(c.poses, m, j) for j, _ in c.revisits]
        if c.kind == "long-away":
            assert r == 0 and index[c.name]["sinks_hold_view"]
            assert c.away_frames >= LONG_AWAY_FRAMES and max(since) >= LONG_AWAY_FRAMES
        else:  # the sinks face elsewhere: frame 0 is not the view returned to
            assert r > 0 and not index[c.name]["sinks_hold_view"]
            turned = abs((c.poses[0, 3] - c.poses[r, 3] + 180) % 360 - 180)
            assert turned > 45, turned
            assert psnr(c.frames[0], c.frames[-1]) < psnr(c.frames[r], c.frames[-1])


def test_last_seen_is_the_latest_visit_not_the_first():
    poses = np.zeros((8, 5), np.float32)
    poses[:, 3] = [0, 10, 0, 10, 20, 10, 0, 5]  # heading 0 seen at frames 0, 2 and (returned) 6
    assert last_seen(poses, 6, 6) == 2
    assert find_revisits(poses, 6)[0] == (6, 0)  # the closest-pose pairing keeps the first
    assert last_seen(poses, 6, 7) is None
