"""The README's first command: the demo, end to end, in its reduced size."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from copart.app import app
from copart.media.read import probe
from copart.models.errors import CopartError

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
    with pytest.raises(CopartError, match="data/ that copart demo did not make"):
        _reuse_or_start_over(tmp_path, {"videos": 6})  # no record: never adopted (nor later deleted)
    assert (tmp_path / "data" / "clip.mp4").exists() and not (tmp_path / "demo.json").exists()
    (tmp_path / "data" / "clip.mp4").unlink()
    (tmp_path / "data").rmdir()
    _reuse_or_start_over(tmp_path, {"videos": 6})  # the demo's own record, written before its folders
    (tmp_path / "data").mkdir()
    (tmp_path / "run").mkdir()
    _reuse_or_start_over(tmp_path, {"videos": 6})  # same settings: reused
    assert (tmp_path / "data").exists() and (tmp_path / "run").exists()
    _reuse_or_start_over(tmp_path, {"videos": 12})  # other settings: started over
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    assert json.loads((tmp_path / "demo.json").read_text()) == {"videos": 12}


DOCS = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))


def _examples() -> list[tuple[str, str]]:
    """Every ``copart ...`` example: the console blocks of the README and docs/, then each command's --help."""
    import re

    from copart.commands import demo, evaluate, info, parts, segment, swap, synthetic, train

    root = Path(__file__).resolve().parents[1]
    found = []
    for page in [root / "README.md", *DOCS]:  # the README, then each docs page, each in its own order
        found += [(page.name, line[2:].split("  #")[0].strip())
                  for line in page.read_text().splitlines() if line.startswith("$ copart ")]
    for module in (demo, evaluate, info, parts, segment, swap, synthetic, train):
        found += [(f"copart {module.__name__.rsplit('.', 1)[-1]} --help", m.strip())
                  for m in re.findall(r"^  (copart [^\n]+)$", module.EPILOG, re.M)]
    return found


# What exists after the demo (demo/...) or is made by an earlier example; anything else (a published
# model, the user's own videos) cannot be had here.
HERE = ("demo/", "data/figures", "runs/figures", "named.pth", "eval.png")


def _runnable(command: str) -> bool:
    import shlex

    paths = [t for t in shlex.split(command)[2:] if "/" in t or t.endswith((".pth", ".tar", ".mp4", ".jpg", ".png"))]
    return bool(paths) and all(p.startswith(HERE) for p in paths)


def test_every_example_after_the_demo_runs_as_written(tmp_path, monkeypatch):
    """The README's, docs/' and --help's examples, followed in order after the demo, each exit 0."""
    import shlex

    monkeypatch.setenv("COPART_DEMO_QUICK", "1")
    made = tmp_path / "made"
    assert runner.invoke(app, ["demo", str(made)]).exit_code == 0
    examples = _examples()
    runnable = [(where, c) for where, c in examples if _runnable(c)]
    assert len(runnable) >= 10, runnable  # the test must be able to fail
    def group(where):  # each page in a folder of its own, the commands' --help together in one
        return "help" if where.endswith("--help") else where

    for source in dict.fromkeys(group(where) for where, _ in runnable):
        cwd = tmp_path / source
        cwd.mkdir()
        (cwd / "demo").symlink_to(made / "quick")  # the quick demo's folder stands for demo/
        monkeypatch.chdir(cwd)
        for where, command in runnable:
            if group(where) != source:
                continue
            if command.startswith("copart demo"):
                continue  # the demo itself ran above
            result = runner.invoke(app, shlex.split(command)[1:])
            assert result.exit_code == 0, f"{where}: {command}\n{result.output}\n{result.exception!r}"


def test_the_demo_time_is_one_range_in_the_readme_and_the_help():
    import re

    from copart.commands import demo

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    page = (root / "docs" / "demo.md").read_text()
    ranges = set(re.findall(r"(\d+) to (\d+) minutes on a 2-core CPU", readme + page + demo.HELP))
    assert ranges == {("6", "12")}, ranges
    # the measurements quoted lie inside the range
    seconds = [int(s) for s in re.findall(r"(\d{3}) s", page[: page.index("What the demo shows")])]
    assert seconds and all(6 * 60 <= s <= 12 * 60 for s in seconds), seconds


def test_the_change_panel_shows_a_large_change_bright():
    """The swap picture's "change x4" panel: a change of 200 levels is white, not wrapped round to dark."""
    import numpy as np

    from copart.media.render import change_picture

    before = np.zeros((4, 6, 3), np.uint8)
    after = before.copy()
    after[0, 0] = (200, 0, 0)  # large: x4 = 800, white (in uint8 it wraps to 32)
    after[1, 1] = (0, 0, 100)  # 400: white (wraps to 144)
    after[2, 2] = (0, 64, 0)  # exactly white
    after[3, 3] = (10, 3, 0)  # small: 40, as it is
    before[3, 4] = 250  # darker after than before counts the same: 250 levels
    panel = change_picture(before, after)
    assert panel.dtype == np.uint8 and panel.shape == (4, 6, 3)
    assert (panel[..., 0] == panel[..., 1]).all() and (panel[..., 1] == panel[..., 2]).all()
    grey = panel[..., 0]
    assert grey[0, 0] == grey[1, 1] == grey[2, 2] == grey[3, 4] == 255
    assert grey[3, 3] == 40
    assert np.count_nonzero(grey) == 5
