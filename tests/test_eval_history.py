"""`magworld eval history`: one target block after longer and longer true histories."""

import json

import pytest

from export_helpers import checkpoint
from worldmodel.cli import main


def run(tmp_path, strategies, lengths="1,2,4"):
    out = tmp_path / "history.json"
    assert main(["eval", "history", "--checkpoint", str(checkpoint("mag")), "--data", "synthetic", "--device", "cpu",
                 "--cases", "2", "--lengths", lengths, "--strategies", strategies, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_without_memory_every_history_length_predicts_the_same_block(tmp_path):
    r = run(tmp_path, "none,window")
    assert r["lengths"] == [1, 2, 4] and r["cases"] == 2
    none = r["psnr"]["none"]
    assert none["1"] == pytest.approx(none["2"]) == pytest.approx(none["4"])  # reads no history: the same target, noise
    window = r["psnr"]["window"]
    assert len({round(v, 6) for v in window.values()}) > 1  # a strategy that reads the history does depend on it
    assert r["copy-last"] > 0 and r["ae-ceiling"] > 0


def test_bad_lengths_get_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="whole numbers"):
        run(tmp_path, "window", lengths="1,x")
    with pytest.raises(ValueError, match=">= 1"):
        run(tmp_path, "window", lengths="0,2")


def test_the_rows_of_eval_revisit_are_offered_and_unknown_ones_refused(tmp_path):
    r = run(tmp_path, "mag w/o stage 1,mag (all slots)", lengths="1,2")
    assert set(r["psnr"]) == {"mag w/o stage 1", "mag (all slots)"}
    with pytest.raises(ValueError, match="unknown strategies"):
        run(tmp_path, "magic", lengths="1")
