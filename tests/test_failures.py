"""Every failure a user meets: one sentence, a non-zero exit, nothing lost or left behind.

Interruptions (Ctrl-C, SIGTERM), unwritable output folders, unchecked writes, runs that cannot
start, settings that do not match what a folder holds, worker errors, what the face detector
says offline, and the training line in an 80-column terminal.
"""

import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from copart.app import main
from copart.models.errors import CopartError
from copart.training.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--preset", "cpu-64-sem-5segments", "--batch-size", "4", "--vis-every", "0"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips") / "data"
    generate(out, videos=5, frames=16, size=64, test=1)
    return out


def _main(capsys, *args) -> tuple[int, str]:
    """``copart ARGS`` in this process, through the real entry point: (exit code, stderr)."""
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    return stopped.value.code or 0, capsys.readouterr().err


def _one_sentence(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines, err
    text = " ".join(" ".join(lines[lines.index(next(l for l in lines if l.startswith("Error:"))):]).split())
    return text


def _cli(*args, **kwargs) -> subprocess.Popen:
    """``copart ARGS`` in a process group of its own, as a terminal runs it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([sys.executable, "-m", "copart", *map(str, args)], env=env, cwd=kwargs.pop("cwd", ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)


def _ctrl_c(proc: subprocess.Popen) -> None:
    """What Ctrl-C does: SIGINT to every process of the foreground group (DataLoader workers too)."""
    os.killpg(proc.pid, signal.SIGINT)


def _wait_for(condition, proc, seconds=120):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert condition(), proc.communicate(timeout=30)


# 1. Ctrl-C stops the whole demo at once.
def test_ctrl_c_stops_the_demo_at_once_and_a_rerun_can_continue(tmp_path):
    folder = tmp_path / "demo"
    proc = _cli("demo", folder)
    log = folder / "run" / "log.jsonl"
    _wait_for(lambda: log.exists() and log.read_text().count("\n") >= 1, proc, 240)
    _ctrl_c(proc)
    started = time.time()
    out, err = proc.communicate(timeout=60)
    assert time.time() - started < 20, "the demo did not stop within seconds"
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("train", "\r"))]
    assert lines[-1] == f"Interrupted; run copart demo {folder} again to continue from what was finished.", err
    assert "Traceback" not in err and "Error" not in err and "4/5" not in out
    assert not (folder / "summary.json").exists() and not (folder / "pictures").exists()
    from copart.models.checkpoint import read_checkpoint
    assert read_checkpoint(folder / "run" / "checkpoint.pth")["step"] >= 1  # where a rerun continues


# 2. Ctrl-C (or SIGTERM) in training: finish the step, checkpoint, say how to resume.
@pytest.mark.parametrize("stop", [_ctrl_c, lambda proc: os.killpg(proc.pid, signal.SIGTERM)], ids=["int", "term"])
def test_an_interrupted_training_run_saves_a_checkpoint_that_resume_continues(tmp_path, clips, stop):
    run = tmp_path / "run"
    proc = _cli("train", *BASE, "--workers", "2", "--data", clips, "--out", run, "--steps", "100000",
                "--checkpoint-every", "100000")
    log = run / "log.jsonl"
    _wait_for(lambda: log.exists() and log.read_text().count("\n") >= 2, proc)
    stop(proc)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    from copart.models.checkpoint import read_checkpoint
    step = int(read_checkpoint(run / "checkpoint.pth")["step"])
    assert step >= 2
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (f"Interrupted at step {step}, which is saved in {run / 'checkpoint.pth'}; "
                    f"continue with copart train --resume {run}."), err
    resumed = _cli("train", "--resume", run, "--steps", str(step + 2))
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert int(read_checkpoint(run / "checkpoint.pth")["step"]) == step + 2


def test_checkpoints_also_come_by_time(tmp_path, clips, capsys):
    run = tmp_path / "run"
    code, err = _main(capsys, "train", *BASE, "--workers", "0", "--data", clips, "--out", run, "--steps", "6",
                      "--checkpoint-every", "1000", "--checkpoint-minutes", "0.0001")
    assert code == 0, err
    # One a step (each step took longer than 6 ms), each replacing checkpoint.pth (issue 20: tests/test_train.py
    # watches them one by one): only the end is a numbered snapshot.
    assert [p.name for p in run.glob("checkpoint-*.pth")] == ["checkpoint-00000006.pth"]


# 3. An interrupted swap says so in one line (tests/test_swap.py checks that nothing is left).
def test_an_interrupted_swap_says_nothing_was_written(tmp_path, bigbuckbunny, astronaut, fixture_checkpoint):
    out = tmp_path / "out.mp4"
    proc = _cli("swap", "--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", "--batch-size", "1",
                bigbuckbunny, astronaut, "-o", out)
    _wait_for(lambda: list(tmp_path.glob(".out.*")), proc)
    _ctrl_c(proc)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "Interrupted; nothing written.", err
    assert list(tmp_path.iterdir()) == []


# 4. An output folder that cannot be written: one sentence naming it, exit 2, before any heavy work.
def _read_only(monkeypatch, folder: Path):
    """Make ``folder`` refuse new files, as a read-only file system does (chmod cannot, for root)."""
    real = tempfile.mkstemp
    real_mkdtemp = tempfile.mkdtemp

    def refuse(dir):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(folder / ".copart-tmp"))

    def mkstemp(*args, dir=None, **kwargs):
        refuse(dir)
        return real(*args, dir=dir, **kwargs)

    def mkdtemp(*args, dir=None, **kwargs):
        refuse(dir)
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


@pytest.mark.parametrize("command", ["swap", "segment", "masks", "png-dir", "train", "synthetic", "demo", "parts"])
def test_a_read_only_output_folder_is_one_sentence_before_any_work(tmp_path, monkeypatch, capsys, command, carphone,
                                                                     astronaut, fixture_checkpoint, clips):
    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("copart.loading.resolve_model", no_model)
    model = ["--checkpoint", fixture_checkpoint, "--no-crop", "--max-frames", "2"]
    args = {
        "swap": ["swap", *model, "--parts", "2", carphone, astronaut, "-o", locked / "out.mp4"],
        "segment": ["segment", *model, carphone, "-o", locked / "out.mp4"],
        "masks": ["segment", *model, carphone, "-o", tmp_path / "o.mp4", "--masks", locked / "m.npz"],
        "png-dir": ["segment", *model, carphone, "-o", tmp_path / "o.mp4", "--png-dir", locked / "labels"],
        "train": ["train", *BASE, "--data", clips, "--out", locked / "run", "--steps", "1"],
        "synthetic": ["synthetic", locked / "data"],
        "demo": ["demo", locked / "demo"],
        "parts": ["parts", fixture_checkpoint, "--name", "x=1", "-o", locked / "named.pth"],
    }[command]
    if command == "parts":
        monkeypatch.undo()  # parts reads the model to name it; only the folder is refused
        _read_only(monkeypatch, locked)
    code, err = _main(capsys, *args)
    assert code == 2, err
    text = _one_sentence(err)
    assert text == f"Error: Cannot write to folder {locked}: read-only file system.", text
    assert sorted(p.name for p in locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the mapping is tested above")
def test_a_real_read_only_folder(tmp_path, capsys, carphone, astronaut, fixture_checkpoint):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--no-crop", "--parts", "2", carphone,
                          astronaut, "-o", locked / "out.mp4")
    finally:
        locked.chmod(0o755)
    assert code == 2 and f"Cannot write to folder {locked}" in _one_sentence(err)


def test_a_full_disk_while_writing_names_the_users_file(tmp_path, monkeypatch, capsys, carphone, astronaut,
                                                         fixture_checkpoint):
    from copart.media import write

    real = write.VideoWriter._write
    calls = {"n": 0}

    def write_until_full(self, image, pts):
        calls["n"] += 1
        if calls["n"] > 3:  # what the muxer raises when the disk is full: the temporary file's name
            raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))
        return real(self, image, pts)

    monkeypatch.setattr(write.VideoWriter, "_write", write_until_full)
    out = tmp_path / "out.mp4"
    code, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--no-crop", "--parts", "2",
                      "--max-frames", "8", carphone, astronaut, "-o", out)
    assert code == 2
    assert _one_sentence(err) == f"Error: Cannot write {out}: no space left on device."
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_name_the_final_file():
    from copart.models.files import atomic_path

    with tempfile.TemporaryDirectory() as folder:
        final = Path(folder) / "result.json"
        with pytest.raises(CopartError, match=f"Cannot write {final}: no space left on device"):
            with atomic_path(final):
                raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/.result.x.part.json")
        assert os.listdir(folder) == []


# 7. Image writes are checked.
def test_an_image_that_cannot_be_written_is_an_error_not_a_lost_file(tmp_path, monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))
    with pytest.raises(CopartError, match="Cannot encode an image"):
        generate(tmp_path / "data", videos=2, frames=4, size=32, test=1)


# 8. VideoWriter is a context manager: a failure leaves no temporary file, and one implementation of atomic writes.
def test_video_writer_as_a_context_manager_leaves_nothing_on_error(tmp_path):
    from copart.media.write import VideoWriter

    with pytest.raises(RuntimeError, match="while writing"):
        with VideoWriter(tmp_path / "clip.mp4", 32, 32, 25, None) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("failed while writing")
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(tmp_path / "clip.mp4", 32, 32, 25, None) as writer:
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_one_implementation_of_atomic_writes():
    """mkstemp + rename lives in copart.models.files only; everything else calls it."""
    found = []
    for path in sorted(p for d in ("copart_cli", "models") for p in (ROOT / d).rglob("*.py")):
        text = path.read_text()
        if "os.replace(" in text or "mkstemp(" in text:
            found.append(path.relative_to(ROOT).as_posix())
    assert found == ["copart_cli/editing/segment.py", "models/files.py"], found  # segment: a folder, renamed whole


# 9. A run that cannot start leaves no folder.
def test_a_training_run_that_cannot_start_leaves_no_folder(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    run = tmp_path / "run"
    code, err = _main(capsys, "train", *BASE, "--workers", "0", "--data", empty, "--out", run, "--steps", "1")
    assert code == 2 and "No usable videos" in err and not run.exists()

    monkeypatch.setenv("COPART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no VGG-19 file there
    clips = tmp_path / "clips"
    generate(clips, videos=3, frames=4, size=64, test=1)
    code, err = _main(capsys, "train", *BASE, "--workers", "0", "--data", clips, "--out", run, "--steps", "1",
                      "--loss", "perceptual")
    text = _one_sentence(err)
    assert code == 2 and "VGG-19" in text and "COPART_OFFLINE=1 forbids downloading it" in text, text
    assert "copart models pull vgg19" in text and "--loss pixel" in text, text
    assert "could not be downloaded" not in text
    assert not run.exists()


# 10. Synthetic clips are reused only with the settings that made them.
def test_synthetic_clips_are_reused_only_with_the_same_settings(tmp_path, capsys):
    data = tmp_path / "data"
    assert _main(capsys, "synthetic", data, "--videos", "3", "--test", "1", "--frames", "4")[0] == 0
    train_before = sorted(p.name for p in (data / "train").iterdir())
    code, err = _main(capsys, "synthetic", data, "--videos", "4", "--test", "2", "--frames", "4")
    text = _one_sentence(err)
    assert code == 2 and "made with other settings (videos 3 (now 4), test 1 (now 2))" in text, text
    assert sorted(p.name for p in (data / "train").iterdir()) == train_before  # nothing changed
    assert _main(capsys, "synthetic", data, "--videos", "4", "--test", "2", "--frames", "4", "--force")[0] == 0
    train, test = ({p.stem for p in (data / s).glob("*.mp4")} for s in ("train", "test"))
    assert not train & test and len(train) == 2 and len(test) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "holiday.mp4").write_text("a user's file")
    code, err = _main(capsys, "synthetic", foreign)
    assert code == 2 and "did not write" in err and (foreign / "holiday.mp4").exists()


# 11. An error inside a DataLoader worker is one sentence, with the default workers too.
def test_a_worker_error_with_two_workers_is_one_sentence(tmp_path, clips, capsys, monkeypatch):
    from copart.training import data as data_module

    def broken(clip, indices, size):
        raise ValueError("decoder exploded")

    monkeypatch.setattr(data_module, "read_frames", broken)
    run = tmp_path / "run"
    code, err = _main(capsys, "train", *BASE, "--workers", "2", "--data", clips, "--out", run, "--steps", "2")
    assert code == 2, err
    text = _one_sentence(err)
    assert text.startswith("Error: Training data ") and text.endswith(".mp4 could not be read (decoder exploded).")
    assert "Original Traceback" not in err and "File " not in err
    assert not run.exists()


# 12. The face detector says what actually happened, once, with the real folder.
def test_the_detector_says_what_happened(tmp_path, monkeypatch):
    from copart.media import faces

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = (tmp_path / "torch" / "hub" / "checkpoints").resolve()
    monkeypatch.setenv("COPART_OFFLINE", "1")
    notices: list[str] = []
    assert isinstance(faces.make_detector("auto", "cpu", notices), faces.HaarDetector)
    assert len(notices) == 1 and "COPART_OFFLINE=1" in notices[0] and str(folder) in notices[0], notices
    assert "could not be fetched" not in notices[0] and "could not be downloaded" not in notices[0]

    monkeypatch.delenv("COPART_OFFLINE")  # online: copart's hub tries, and conftest's guard stops the connection
    monkeypatch.delenv("COPART_MIRROR", raising=False)
    monkeypatch.setenv("COPART_HOME", str(tmp_path / "home"))
    notices = []
    faces.make_detector("auto", "cpu", notices)
    assert "could not be fetched" in notices[0] and "tests never touch the network" in notices[0], notices
    assert str(folder) in notices[0] and not list(folder.glob("s3fd*"))

    folder.mkdir(parents=True, exist_ok=True)
    (folder / Path(faces.S3FD_URL).name).write_bytes(b"not weights")
    notices = []
    faces.make_detector("auto", "cpu", notices)
    assert "are there but could not be loaded" in notices[0], notices
    with pytest.raises(CopartError, match="cannot run: face-alignment's detector weights"):
        faces.make_detector("face-alignment", "cpu", [])


def test_eval_crop_passes_the_detector_notice_on(tmp_path, monkeypatch, capsys, fixture_checkpoint):
    monkeypatch.setenv("COPART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = tmp_path / "data"
    generate(data, videos=3, frames=4, size=64, test=1, fit_every=1)
    code, err = _main(capsys, "eval", data / "eval", "--checkpoint", fixture_checkpoint, "--metric", "iou", "--crop")
    assert code == 0, err
    assert err.count("COPART_OFFLINE=1 and face-alignment's detector weights are not in") == 1, err


# 15. The training line in an 80-column terminal: progress, rate and time left first.
def test_the_training_line_fits_80_columns_with_the_time_left():
    from copart.ui import TrainingProgress

    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    losses = {"perceptual": 2.2345, "equivariance_shift": 0.6071, "equivariance_affine": 0.7293, "total": 3.571}
    with TrainingProgress(console) as progress:
        for step in range(1, 4):
            progress(step, 800, losses, 28.83)
    last = buffer.getvalue().replace("\x1b[2K", "\n").replace("\r", "\n").split("\n")
    line = [part for part in last if "3/800" in part][-1]
    assert len(line.rstrip()) <= 80, line
    assert "28.8 pairs/s" in line and "ETA 0:" in line and "total 3.571" in line, line
    assert line.index("ETA") < line.index("total"), line


def test_training_progress_is_reported_every_step(tmp_path, clips):
    from copart.training import loop

    config, label = loop.new_run_config("cpu-64-sem-5segments", clips)
    seen = []
    loop.train(config, tmp_path / "run", loop.TrainSettings(data=str(clips), steps=3, batch_size=4, workers=0,
                                                            vis_every=0, checkpoint_every=1000),
               label=label, on_step=lambda step, total, losses, rate: seen.append(step))
    assert seen == [1, 2, 3]


def test_a_segment_run_that_fails_late_takes_back_what_it_had_put_in_place(tmp_path, monkeypatch, capsys, carphone,
                                                                              fixture_checkpoint):
    from copart.media import masks

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self._dir))

    monkeypatch.setattr(masks.NpzStream, "close", full_disk)
    code, err = _main(capsys, "segment", "--checkpoint", fixture_checkpoint, "--no-crop", "--max-frames", "3",
                      carphone, "-o", tmp_path / "o.mp4", "--masks", tmp_path / "m.npz")
    assert code == 2, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the video nor the legend stays
