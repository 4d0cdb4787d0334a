"""copart train: steps, learning, kill-and-resume, torchrun, FOMM init, bad inputs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from copart.app import app
from copart.models.checkpoint import read_checkpoint, save_atomic
from copart.models.errors import CopartError
from copart.training.loop import latest_checkpoint
from copart.training.synthetic import generate

from .conftest import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
BASE = ["--preset", "cpu-64-sem-5segments", "--batch-size", "4", "--workers", "1", "--vis-every", "0"]


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, videos=6, frames=24, size=64, test=1)
    return out


def _train(*args):
    result = runner.invoke(app, ["train", *map(str, args)])
    return result


def _cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "copart", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_one_step_changes_the_weights_and_every_loss_is_finite(tmp_path, synthetic_data):
    run = tmp_path / "run"
    result = _train(*BASE, "--data", synthetic_data, "--out", run, "--steps", "1", "--vis-every", "1")
    assert result.exit_code == 0, result.output
    data = read_checkpoint(run / "checkpoint.pth")
    assert data["step"] == 1 and (run / "checkpoint-00000001.pth").exists()
    torch.manual_seed(0)
    from copart import presets
    from copart.models import CoPartModel, ModelConfig

    fresh = CoPartModel(ModelConfig.from_dict(presets.load("cpu-64-sem-5segments")))
    changed = [k for k, v in fresh.segmentation_module.state_dict().items()
               if not torch.equal(v, data["segmentation_module"][k])]
    assert "segmentation.weight" in changed and "shift.weight" in changed
    (entry,) = _log(run)
    assert set(entry) >= {"pixel", "equivariance_shift", "equivariance_affine", "total"}
    assert all(np.isfinite(v) for v in entry.values())
    assert (run / "train-vis" / "00000001.png").exists() and (run / "config.yaml").exists()


def test_thirty_steps_lower_the_reconstruction_loss(tmp_path, synthetic_data):
    run = tmp_path / "run"
    result = _train(*BASE, "--data", synthetic_data, "--out", run, "--steps", "30", "--batch-size", "8")
    assert result.exit_code == 0, result.output
    pixel = [e["pixel"] for e in _log(run)]
    assert len(pixel) == 30
    assert np.mean(pixel[-5:]) < 0.8 * np.mean(pixel[:5]), pixel


def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path, synthetic_data):
    """Run A: 8 steps. Run B: killed (SIGKILL) after its checkpoint at step 4, then resumed.
    Augmentation on (flips, time flip, colour jitter), one DataLoader worker."""
    common = [*BASE, "--data", synthetic_data, "--steps", "8", "--checkpoint-every", "4"]
    assert _train(*common, "--out", tmp_path / "a").exit_code == 0
    run = tmp_path / "b"
    proc = _cli("train", *common, "--out", run)
    deadline = time.time() + 120
    while not (run / "checkpoint-00000004.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # The kill may land between the numbered file and its copy to checkpoint.pth: resume
    # takes whichever is newer, and so does this check.
    assert read_checkpoint(latest_checkpoint(run))["step"] == 4, "the kill came too late to test a resume"
    resumed = _cli("train", "--resume", run)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.pth"), read_checkpoint(run / "checkpoint.pth")
    assert a["step"] == b["step"] == 8
    for module in ("segmentation_module", "reconstruction_module"):
        for key, value in a[module].items():
            assert torch.equal(value, b[module][key]), f"{module}.{key}"
    assert [e["step"] for e in _log(run)] == list(range(1, 9))
    assert [e["total"] for e in _log(run)] == [e["total"] for e in _log(tmp_path / "a")]


def test_resume_takes_the_newest_of_the_numbered_file_and_its_copy(tmp_path):
    """A kill between the two writes of a step leaves the numbered file newer than checkpoint.pth."""
    save_atomic({"step": 2}, tmp_path / "checkpoint-00000002.pth")
    save_atomic({"step": 4}, tmp_path / "checkpoint-00000004.pth")
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000004.pth"  # copy never made
    save_atomic({"step": 2}, tmp_path / "checkpoint.pth")
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000004.pth"  # copy of an older step
    save_atomic({"step": 4}, tmp_path / "checkpoint.pth")
    assert latest_checkpoint(tmp_path).name == "checkpoint.pth"


def _torchrun(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "copart", "train", *map(str, args)],
        check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_two_processes_on_cpu_and_their_resume(tmp_path, synthetic_data):
    """Two gloo processes write one set of checkpoints and one log, and say their notes once; a run
    stopped at step 2 and resumed to 4 equals one run to 4 (each process's transform generator is
    saved and restored). Both start from the same FOMM checkpoint."""
    common = [*BASE, "--device", "cpu", "--data", synthetic_data, "--init", REFERENCE / "fomm-format.pth.tar"]
    whole = _torchrun(*common, "--out", tmp_path / "a", "--steps", "4", "--checkpoint-every", "2")
    assert whole.stderr.count("Note: initialised from the First Order Motion Model") == 1, whole.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint*.pth")) == [
        "checkpoint-00000002.pth", "checkpoint-00000004.pth", "checkpoint.pth"]
    assert [e["step"] for e in _log(tmp_path / "a")] == [1, 2, 3, 4]  # one writer
    assert whole.stdout.count("Trained to step 4") == 1
    run = tmp_path / "b"
    _torchrun(*common, "--out", run, "--steps", "2")
    assert len(read_checkpoint(run / "checkpoint.pth")["rng"]["generators"]) == 2
    _torchrun("--resume", run, "--steps", "4", "--device", "cpu")
    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.pth"), read_checkpoint(run / "checkpoint.pth")
    assert a["step"] == b["step"] == 4
    for module in ("segmentation_module", "reconstruction_module"):
        for key, value in a[module].items():
            assert torch.equal(value, b[module][key]), f"{module}.{key}"
    assert [e["total"] for e in _log(run)] == [e["total"] for e in _log(tmp_path / "a")]


def test_fomm_checkpoint_initialises_training(tmp_path, synthetic_data, reference_config):
    preset = tmp_path / "fixture.yaml"
    config = dict(reference_config, train_params={"loss": "pixel", "scales": [1, 0.5], "num_repeats": 1,
                                                 "transform_params": {"sigma_affine": 0.05}})
    preset.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    result = _train("--preset", preset, "--data", synthetic_data, "--out", run, "--steps", "1", "--batch-size", "2",
                    "--workers", "0", "--init", REFERENCE / "fomm-format.pth.tar")
    assert result.exit_code == 0, result.output
    assert "First Order Motion Model" in result.output
    start = read_checkpoint(REFERENCE / "fomm-format.pth.tar")["generator"]["bottleneck.r0.conv1.weight"]
    after = read_checkpoint(run / "checkpoint.pth")["reconstruction_module"]["bottleneck.r0.conv1.weight"]
    assert (after - start).abs().max() < 0.01  # one Adam step away from the FOMM weights, not a fresh init


def test_bad_inputs(tmp_path, synthetic_data):
    def error(*args):
        result = _train(*BASE, *args)
        assert isinstance(result.exception, CopartError), result.output
        return str(result.exception)

    assert "does not exist" in error("--data", tmp_path / "missing", "--out", tmp_path / "r")
    (tmp_path / "empty").mkdir()
    assert "No usable videos" in error("--data", tmp_path / "empty", "--out", tmp_path / "r1")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.mp4").write_text("not a video")
    shutil.copy(synthetic_data / "train" / "figure000.mp4", junk / "good.mp4")
    one = junk / "single.png"
    import cv2

    cv2.imwrite(str(one), np.zeros((64, 64, 3), np.uint8))  # a one-frame strip
    result = _train(*BASE, "--data", junk, "--out", tmp_path / "r2", "--steps", "1")
    assert result.exit_code == 0, result.output
    assert "skipped 2 unusable" in result.output and "broken.mp4" in result.output and "single.png" in result.output
    assert "already exists" in error("--data", junk, "--out", tmp_path / "r2", "--steps", "1")
    assert "no checkpoint.pth" in str(_train("--resume", tmp_path / "empty").exception)
    assert "--resume continues" in str(_train("--resume", tmp_path / "r2", "--init", REFERENCE / "fomm-format.pth.tar").exception)


def test_transport_streams_are_read_by_frame_index(tmp_path, synthetic_data):
    import imageio_ffmpeg

    from copart.training.data import probe_clip, read_frames

    ts = tmp_path / "clip.ts"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i",
                    str(synthetic_data / "train" / "figure000.mp4"), "-c:v", "libx264", "-bf", "2", str(ts)],
                   check=True)
    clip = probe_clip(ts, 64)
    import av

    with av.open(str(ts)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert clip.num_frames == len(every) == 24
    for index in (0, 5, 17, 23):
        (frame,) = read_frames(clip, [index], (64, 64))
        assert np.array_equal(frame, every[index]), index


def test_resume_can_train_longer_but_not_change_the_run(tmp_path, synthetic_data):
    run = tmp_path / "run"
    assert _train(*BASE, "--data", synthetic_data, "--out", run, "--steps", "2",
                  "--checkpoint-every", "1").exit_code == 0
    longer = _train("--resume", run, "--steps", "4", "--checkpoint-every", "500")  # a default value is a value too
    assert longer.exit_code == 0, longer.output
    assert read_checkpoint(run / "checkpoint.pth")["step"] == 4
    assert sorted(p.name for p in run.glob("checkpoint-*.pth")) == [
        "checkpoint-00000001.pth", "checkpoint-00000002.pth", "checkpoint-00000004.pth"]
    assert "Trained to step 4" in _train("--resume", run).output  # finished: nothing more to do
    # Naming parts in place keeps the training state, and a resumed run keeps the names.
    assert runner.invoke(app, ["parts", str(run / "checkpoint.pth"), "--name", "torso=1", "--in-place"]).exit_code == 0
    assert _train("--resume", run, "--steps", "5").exit_code == 0
    assert read_checkpoint(run / "checkpoint.pth")["part_names"]["torso"] == [1]
    refused = _train("--resume", run, "--batch-size", "8")
    assert isinstance(refused.exception, CopartError) and "--batch-size" in str(refused.exception)


def test_a_worker_error_is_one_sentence_and_leaves_no_half_started_run(tmp_path, synthetic_data, monkeypatch):
    from copart.training import data as data_module

    def broken(clip, indices, size):
        raise ValueError("decoder exploded")

    monkeypatch.setattr(data_module, "read_frames", broken)
    run = tmp_path / "run"
    result = _train(*BASE, "--workers", "0", "--data", synthetic_data, "--out", run, "--steps", "2")
    assert isinstance(result.exception, CopartError)
    assert "could not be read (decoder exploded)" in str(result.exception)
    assert not run.exists() or list(run.iterdir()) == []


# A time budget survives an interruption (issue 20, point 4).
def test_a_budgeted_run_killed_after_a_time_checkpoint_finishes_its_budget_on_resume(tmp_path, synthetic_data):
    """--minutes 0.2 (12 s of training), killed (SIGKILL) after a time-based checkpoint, then
    resumed with --resume alone: it stops by itself once the 12 s are spent, the seconds trained
    before the kill counting toward them."""
    budget = 12.0
    run = tmp_path / "run"
    proc = _cli("train", *BASE, "--data", synthetic_data, "--out", run, "--minutes", budget / 60,
                "--checkpoint-every", "100000", "--checkpoint-minutes", "0.01")
    deadline = time.time() + 120

    def saved_step():
        try:
            return int(read_checkpoint(run / "checkpoint.pth")["step"])
        except (CopartError, OSError):
            return 0

    while saved_step() < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = read_checkpoint(run / "checkpoint.pth")
    assert before["step"] >= 3 and not before["train"].get("spent_seconds", 0) >= budget, "killed too late"
    spent = before["train"]["spent_seconds"]  # the budget's part already spent, stored with the run
    assert 0 < spent < budget and before["train"]["minutes"] == pytest.approx(budget / 60)
    assert before["train"]["steps"] is None  # bounded by time alone: no made-up step count

    started = time.time()
    resumed = _cli("train", "--resume", run)
    try:
        out, err = resumed.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        resumed.kill()
        resumed.communicate()
        pytest.fail("the resumed run did not stop within its budget")
    assert resumed.returncode == 0, err
    after = read_checkpoint(run / "checkpoint.pth")
    assert budget <= after["train"]["spent_seconds"] < budget + 10, after["train"]
    assert after["step"] > before["step"] and after["train"]["steps"] == after["step"]
    assert time.time() - started < 120
    assert [e["step"] for e in _log(run)] == list(range(1, after["step"] + 1))
    assert f"Trained to step {after['step']}" in out
    assert "of the time budget" in err and "000000000" not in err  # the time, not a step total
    # A finished budget: resuming again trains nothing more.
    again = _cli("train", "--resume", run)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0 and f"Trained to step {after['step']}" in out, err
    assert read_checkpoint(run / "checkpoint.pth")["step"] == after["step"]


def test_what_a_resume_is_given_says_how_it_ends():
    from copart.training.loop import UNBOUNDED, resumed_settings

    stored = {"data": "d", "steps": None, "batch_size": 4, "minutes": 20.0, "spent_seconds": 300.0, "keep": 3,
              "checkpoint_every": 500}
    same = resumed_settings(stored, {"steps": None, "minutes": None, "workers": 0})
    assert (same.steps, same.minutes, same.spent_seconds, same.keep, same.workers) == (None, 20.0, 300.0, 3, 0)
    more = resumed_settings(stored, {"minutes": 10.0})  # ten more minutes than already spent
    assert (more.steps, more.minutes) == (None, pytest.approx(15.0))
    steps = resumed_settings(stored, {"steps": 900, "keep": 1})
    assert (steps.steps, steps.minutes, steps.keep) == (900, None, 1)
    both = resumed_settings(stored, {"steps": 900, "minutes": 1.0})
    assert (both.steps, both.minutes) == (900, pytest.approx(6.0))
    # A run saved before budgets were kept stored its step limit as 10^9: read as "by time alone".
    old = resumed_settings({"data": "d", "steps": UNBOUNDED, "batch_size": 4, "minutes": 20.0}, None)
    assert (old.steps, old.minutes, old.spent_seconds) == (None, 20.0, 0.0)


def test_a_budgeted_run_reports_its_clock_and_a_real_total(tmp_path, synthetic_data):
    from copart.training import loop

    config, label = loop.new_run_config("cpu-64-sem-5segments", synthetic_data)
    seen = []
    settings = loop.TrainSettings(data=str(synthetic_data), steps=None, batch_size=4, workers=0, vis_every=0,
                                  checkpoint_every=1000, minutes=0.02)
    loop.train(config, tmp_path / "run", settings, label=label,
               on_step=lambda step, total, losses, rate, clock=None: seen.append((step, total, clock)))
    assert seen and all(total is None and clock is not None for _, total, clock in seen)
    spent, budget = seen[-1][2]
    assert budget == pytest.approx(1.2) and spent >= budget
    assert all(a[2][0] <= b[2][0] for a, b in zip(seen, seen[1:]))  # the clock only goes forward


# What is kept (issue 20, point 5).
def _numbered(run):
    return sorted(p.name for p in run.glob("checkpoint-*.pth"))


def test_time_checkpoints_replace_one_another_and_only_snapshots_are_numbered(tmp_path, synthetic_data):
    from copart.training import loop

    config, label = loop.new_run_config("cpu-64-sem-5segments", synthetic_data)
    run = tmp_path / "run"
    seen = []

    def on_step(step, total, losses, rate):  # called after the step's checkpoint was written
        seen.append((int(read_checkpoint(run / "checkpoint.pth")["step"]), _numbered(run)))

    loop.train(config, run, loop.TrainSettings(data=str(synthetic_data), steps=6, batch_size=4, workers=0,
                                               vis_every=0, checkpoint_every=4, checkpoint_minutes=1e-6),
               label=label, on_step=on_step)
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5, 6]  # a time checkpoint at every step ...
    assert seen[2][1] == [] and seen[4][1] == ["checkpoint-00000004.pth"]  # ... replacing the last one
    assert _numbered(run) == ["checkpoint-00000004.pth", "checkpoint-00000006.pth"]  # every N steps, and the end
    assert not list(run.glob(".checkpoint*"))


def test_keep_bounds_the_runs_own_snapshots_and_nothing_else(tmp_path, synthetic_data):
    run = tmp_path / "run"
    common = [*BASE, "--workers", "0", "--checkpoint-every", "1"]
    assert _train(*common, "--data", synthetic_data, "--out", run, "--steps", "3").exit_code == 0
    assert _numbered(run) == [f"checkpoint-0000000{i}.pth" for i in (1, 2, 3)]  # all kept without --keep
    # The user's own: a snapshot named in place (edited), and a file from elsewhere under a snapshot's name.
    assert runner.invoke(app, ["parts", str(run / "checkpoint-00000002.pth"), "--name", "arm=1",
                               "--in-place"]).exit_code == 0
    shutil.copyfile(run / "checkpoint-00000001.pth", run / "checkpoint-00000000.pth")
    result = _train("--resume", run, "--steps", "6", "--keep", "2")
    assert result.exit_code == 0, result.output
    assert _numbered(run) == ["checkpoint-00000000.pth", "checkpoint-00000002.pth", "checkpoint-00000005.pth",
                              "checkpoint-00000006.pth"]
    assert read_checkpoint(run / "checkpoint.pth")["step"] == 6
    assert sorted(json.loads((run / "snapshots.json").read_text())["written"]) == [
        "checkpoint-00000005.pth", "checkpoint-00000006.pth"]
    assert not list(run.glob(".checkpoint*"))
    # --keep is stored with the run: a resume without it keeps bounding.
    assert _train("--resume", run, "--steps", "7").exit_code == 0
    assert _numbered(run)[-2:] == ["checkpoint-00000006.pth", "checkpoint-00000007.pth"]
    assert "checkpoint-00000005.pth" not in _numbered(run)


# torchrun: a failed --init download stops every process (issue 20, point 6).
def test_torchrun_a_failed_init_download_stops_every_process_with_one_message(tmp_path, synthetic_data):
    logs = tmp_path / "logs"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COPART_OFFLINE="1",
               COPART_HOME=str(tmp_path / "empty-cache"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "--log-dir", str(logs), "--redirects", "3", "-m", "copart", "train", *BASE, "--device", "cpu",
             "--data", str(synthetic_data), "--out", str(tmp_path / "run"), "--steps", "1", "--init", "vox-cpk"],
            check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a process waited for the failed download")
    assert result.returncode != 0
    errors = {}
    for rank in (0, 1):
        (path,) = logs.rglob(f"attempt_0/{rank}/stderr.log")
        text = path.read_text()
        assert "Traceback" not in text, text
        errors[rank] = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors[0]) == 1 and errors[0] == errors[1], errors
    assert "vox-cpk (vox-cpk.pth.tar) is not in the cache and COPART_OFFLINE=1" in errors[0][0]
    assert not (tmp_path / "run").exists()
