"""`magworld train` and `magworld eval` end to end on the generated smoke-test data."""

import json

import pytest

from worldmodel.cli import build_parser, main
from worldmodel.train.stages import STAGES, available_stages, load_stage

TINY = ["--preset", "tiny"]
COMMON = ["--data", "synthetic", "--batch-size", "2", "--stats-frames", "6",
          "--log-every", "1", "--no-progress", "--device", "cpu"]


def test_train_lists_exactly_the_registered_stages():
    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    stages = next(a for a in train._actions if a.dest == "train_command")
    assert available_stages() == list(STAGES)
    assert list(stages.choices) == [*STAGES, "package"], "every stage, then the packaging action"
    with pytest.raises(ValueError, match="unknown training stage 'nope'"):
        load_stage("nope")


def test_train_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "autoencoder", "--out", str(run), "--max-steps", "2", *TINY, *COMMON]) == 0
    assert (run / "checkpoint" / "autoencoder.safetensors").is_file()
    # --resume without --preset takes the checkpoint's config; overrides that change it are refused.
    assert main(["train", "autoencoder", "--out", str(run), "--max-steps", "3", "--resume", *COMMON]) == 0
    with pytest.raises(Exception, match="autoencoder.latent_channels"):
        main(["train", "autoencoder", "--out", str(run), "--max-steps", "4", "--resume",
              "--set", "autoencoder.latent_channels=2", *TINY, *COMMON])

    assert main(["eval", "curves", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 1000

    capsys.readouterr()
    assert main(["eval", "autoencoder", "--checkpoint", str(run), "--data", "synthetic", "--max-frames", "6",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 6 and 0 < result["psnr_mean"] < 100 and -1 <= result["ssim_mean"] <= 1
    assert result["lpips"] is None
    assert result["sharpness_true"] > 0 and result["sharpness_reconstruction"] >= 0
    assert result["sharpness_ratio"] == pytest.approx(result["sharpness_reconstruction"] / result["sharpness_true"])

    out = tmp_path / "ae.json"
    assert main(["eval", "autoencoder", "--checkpoint", str(run / "checkpoint"), "--data", "synthetic",
                 "--max-frames", "3", "--json", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["frames"] == 3
