"""The README's first command: the demo, end to end, in its reduced size."""

import json

from typer.testing import CliRunner

from copart.app import app
from copart.media.read import probe

runner = CliRunner()


def test_demo_runs_end_to_end_and_reuses_what_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("COPART_DEMO_QUICK", "1")
    root = tmp_path / "demo"
    result = runner.invoke(app, ["demo", str(root)])
    assert result.exit_code == 0, result.output
    folder = root / "quick"  # a smoke test keeps to a folder of its own
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("segmentation", "swap"):
        info = probe(summary[key])
        assert info["frames"] == 24 and info["codec"] == "h264" and info["fps"] == 25
    assert probe(summary["segmentation"])["width"] == 64  # overlay at the model's size
    assert 0 <= summary["metrics"]["iou"] <= 1 and summary["metrics"]["mae_sum"] > 0
    assert {p.split("/")[-1] for p in summary["pictures"]} == {"eval.png", "legend.png", "segment.png", "swap.png",
                                                               "train-vis.png"}
    log = (folder / "run" / "log.jsonl").read_text()

    again = runner.invoke(app, ["demo", str(root)])
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output
    assert (folder / "run" / "log.jsonl").read_text() == log  # not trained again


def test_the_demo_starts_over_only_what_it_made_with_other_settings(tmp_path):
    from copart.demo import _reuse_or_start_over

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.mp4").write_text("made before any record")
    _reuse_or_start_over(tmp_path, {"videos": 6})  # no record: reused as it is
    assert (tmp_path / "data" / "clip.mp4").exists()
    (tmp_path / "run").mkdir()
    _reuse_or_start_over(tmp_path, {"videos": 6})  # same settings: reused
    assert (tmp_path / "data").exists() and (tmp_path / "run").exists()
    _reuse_or_start_over(tmp_path, {"videos": 12})  # other settings: started over
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    assert json.loads((tmp_path / "demo.json").read_text()) == {"videos": 12}
