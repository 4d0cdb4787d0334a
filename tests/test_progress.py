"""Progress where the output is not a terminal (a log file, CI, a batch job): plain lines every so
often and at the end, under the same names as the training log (issue 20, point 19)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from copart import ui
from copart.training.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
LOSSES = {"pixel": 0.1, "concentration": 0.02, "equivariance_shift": 0.3, "equivariance_affine": 0.4, "total": 0.82}


def _captured(width=80):
    buffer = io.StringIO()
    return buffer, Console(file=buffer, width=width, force_terminal=False, color_system=None)


def test_training_progress_writes_a_plain_line_every_so_often_and_at_the_end(monkeypatch):
    buffer, console = _captured()
    with ui.TrainingProgress(console) as progress:
        for step in range(1, 6):
            progress(step, 10, LOSSES, 12.5)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first update, then (within PLAIN_EVERY) the last one at the end
    assert lines[0].startswith("train: step 1/10 (10%), ") and lines[1].startswith("train: step 5/10 (50%), ")
    assert "12.5 pairs/s" in lines[1] and "ETA 0:00:0" in lines[1]
    assert lines[1].endswith("total 0.820, pixel 0.100, concentration 0.020, equivariance_shift 0.300, "
                             "equivariance_affine 0.400"), lines[1]

    monkeypatch.setattr(ui, "PLAIN_EVERY", 0.0)
    buffer, console = _captured()
    with ui.TrainingProgress(console) as progress:
        for step in range(1, 4):
            progress(step, 3, LOSSES, 12.5)
    lines = buffer.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["train: step 1/3 (33%)", "train: step 2/3 (67%)",
                                                      "train: step 3/3 (100%)"]
    assert "\x1b" not in buffer.getvalue() and "━" not in buffer.getvalue()


def test_a_budgeted_run_shows_its_clock_not_a_step_total():
    buffer, console = _captured()
    with ui.TrainingProgress(console) as progress:
        progress(3, None, LOSSES, 12.5, clock=(6.0, 12.0))
    (line,) = buffer.getvalue().splitlines()
    assert line.startswith("train: step 3, 0:00:06/0:00:12 of the time budget (50%), 12.5 pairs/s, ETA 0:00:06;")
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=120, force_terminal=True, color_system=None)
    with ui.TrainingProgress(terminal) as progress:
        progress(3, None, LOSSES, 12.5, clock=(6.0, 12.0))
    text = buffer.getvalue()
    assert "step 3 " in text and "0:00:06/0:00:12" in text and "ETA 0:00:06" in text and "None" not in text


def test_the_training_bar_names_the_losses_as_the_log_does():
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=200, force_terminal=True, color_system=None)
    with ui.TrainingProgress(terminal) as progress:
        progress(1, 800, LOSSES, 28.8)
    text = buffer.getvalue()
    assert "pixel 0.100" in text and "concentration 0.020" in text and "equivariance_shift 0.300" in text, text
    assert "rec " not in text


def test_count_and_download_progress_write_plain_lines():
    buffer, console = _captured()
    with ui.CountProgress(console, "segment", "frames") as progress:
        for done in range(1, 5):
            progress(done, 4)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("segment: 1/4 frames (25%), ") and lines[-1].startswith("segment: 4/4 frames (100%), ")
    assert len(lines) == 2
    buffer, console = _captured()
    with ui.BytesProgress(console, "vox-cpk") as progress:
        progress(1_000_000, 4_000_000)
        progress(2_000_000, 4_000_000)
    lines = buffer.getvalue().splitlines()
    assert lines == [lines[0], lines[1]] and lines[1].startswith("vox-cpk: 2.0 MB of 4.0 MB (50%), ")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "data"
    generate(out, videos=5, frames=16, size=64, test=1)
    return out


def test_copart_train_into_a_pipe_writes_progress_lines(tmp_path, clips):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "copart", "train", "--preset", "cpu-64-sem-5segments", "--batch-size", "4",
         "--workers", "0", "--vis-every", "0", "--data", str(clips), "--out", str(tmp_path / "run"), "--steps", "3"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("train:")]
    assert lines[0].startswith("train: step 1/3 (33%)") and lines[-1].startswith("train: step 3/3 (100%)"), lines
    assert "pixel" in lines[-1] and "concentration" in lines[-1] and "rec " not in result.stderr


def test_the_demo_into_a_log_writes_progress_lines(tmp_path, monkeypatch):
    from copart.app import app

    monkeypatch.setenv("COPART_DEMO_QUICK", "1")
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for job in ("train: step", "segment: ", "swap: ", "eval: "):
        assert any(line.startswith(job) for line in lines), (job, result.output)
    final = [line for line in lines if line.startswith("train: step")][-1]
    steps = final.split(",")[0].split()[-2]
    assert steps.split("/")[0] == steps.split("/")[1], final  # the last line is the end of training
