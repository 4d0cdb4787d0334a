"""Many videos in one command (issue 24): a folder or a glob as TARGET, resumable, a broken input
named in the summary, torchrun sharing the targets."""

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from copart import batch, ui
from copart.app import app
from copart.media.read import probe
from copart.models.errors import CopartError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
LENGTHS = [6, 8, 10, 12]  # frames of clip0 .. clip3; clip1 has sound
FPS = 25


def _write_clip(path: Path, images, sound: bool = False) -> None:
    """An H.264 MP4 of ``images`` at 25 frames/s, with a 440 Hz AAC track as long as the video if ``sound``."""
    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        audio = c.add_stream("aac", rate=16000) if sound else None
        for image in images:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in video.encode(None):
            c.mux(packet)
        if audio is not None:
            n = 16000 * len(images) // FPS
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)[None]
            for start in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]), format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = 16000, start
                for packet in audio.encode(frame):
                    c.mux(packet)
            for packet in audio.encode(None):
                c.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, carphone) -> Path:
    """Four short Carphone clips (a real face), clip1.mp4 with sound."""
    folder = tmp_path_factory.mktemp("clips")
    with av.open(str(carphone)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for i, n in enumerate(LENGTHS):
        _write_clip(folder / f"clip{i}.mp4", frames[10 * i:10 * i + n], sound=i == 1)
    return folder


def _swap(*args):
    return runner.invoke(app, ["swap", *map(str, args)])


def _mtimes(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def _rows(output: str) -> dict:
    """The summary table's rows: input name -> its words."""
    return {line.split()[0]: line.split() for line in output.splitlines() if line.startswith(("clip", "broken"))}


def test_a_folder_of_four_clips_gives_four_outputs_once_and_a_rerun_rewrites_nothing(
        tmp_path, clips, astronaut, fixture_checkpoint, monkeypatch):
    """Four outputs with the inputs' frame counts and sound, the model, the source and the face
    detector made once for all four; the same command again rewrites nothing, much faster; a
    removed output is made again alone."""
    from copart import loading
    from copart.editing import swap as editing_swap
    from copart.media import faces

    made = {"model": 0, "source": 0, "detector": 0, "swapper": 0}

    def counted(name, function):
        def call(*args, **kwargs):
            made[name] += 1
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(loading, "resolve_model", counted("model", loading.resolve_model))
    monkeypatch.setattr(editing_swap, "source_image", counted("source", editing_swap.source_image))
    monkeypatch.setattr(faces, "make_detector", counted("detector", faces.make_detector))
    monkeypatch.setattr(editing_swap, "PartSwapper", counted("swapper", editing_swap.PartSwapper))
    out = tmp_path / "out" / "swapped"  # created, with its parent
    command = ["--checkpoint", fixture_checkpoint, "--parts", "hair", "--detector", "haar", clips, astronaut, "-o", out]
    t0 = time.perf_counter()
    first = _swap(*command)
    first_time = time.perf_counter() - t0
    assert first.exit_code == 0, first.output
    assert made == {"model": 1, "source": 1, "detector": 1, "swapper": 1}, made
    assert sorted(p.name for p in out.iterdir()) == [f"clip{i}.mp4" for i in range(4)]
    for i, n in enumerate(LENGTHS):
        info = probe(out / f"clip{i}.mp4")
        assert info["frames"] == n and info["fps"] == FPS
        assert bool(info["audio"]) == (i == 1)
    assert _audio_packets(out / "clip1.mp4") == _audio_packets(clips / "clip1.mp4")  # the sound kept unchanged
    rows = _rows(first.stdout)
    assert [rows[f"clip{i}.mp4"][1:3] for i in range(4)] == [["done", str(n)] for n in LENGTHS], first.stdout
    assert "4 inputs: 4 done, 0 skipped (already made), 0 failed" in first.stdout

    before = _mtimes(out)
    t0 = time.perf_counter()
    again = _swap(*command)
    again_time = time.perf_counter() - t0
    assert again.exit_code == 0, again.output
    assert _mtimes(out) == before  # nothing rewritten
    assert all(row[1] == "skipped" for row in _rows(again.stdout).values()) and len(_rows(again.stdout)) == 4
    assert made["model"] == 1  # every output there: the model is not even loaded
    assert again_time < 0.3 * first_time, (again_time, first_time)

    (out / "clip2.mp4").unlink()  # as a batch killed during clip2 leaves it (outputs are atomic)
    resumed = _swap(*command)
    assert resumed.exit_code == 0, resumed.output
    assert [r[1] for r in _rows(resumed.stdout).values()] == ["skipped", "skipped", "done", "skipped"]
    assert {k: v for k, v in _mtimes(out).items() if k != "clip2.mp4"} == \
        {k: v for k, v in before.items() if k != "clip2.mp4"}
    assert probe(out / "clip2.mp4")["frames"] == LENGTHS[2]


def test_a_broken_input_is_named_and_the_others_are_done(tmp_path, clips, astronaut, fixture_checkpoint):
    folder = tmp_path / "clips"
    shutil.copytree(clips, folder)
    (folder / "broken.mp4").write_text("this is text, not a video\n")
    (folder / "notes.txt").write_text("not taken: not a video suffix\n")
    out = tmp_path / "out"
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "1", "--no-crop", "--max-frames", "3", folder,
                   astronaut, "-o", out)
    assert result.exit_code == 1, result.output
    rows = _rows(result.stdout)
    assert list(rows) == ["broken.mp4", "clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4"]  # sorted
    assert rows["broken.mp4"][1] == "failed"
    assert f"Target {folder / 'broken.mp4'} is not a video or image copart can read" in result.stdout
    assert [rows[f"clip{i}.mp4"][1:3] for i in range(4)] == [["done", "3"]] * 4
    assert sorted(p.name for p in out.iterdir()) == [f"clip{i}.mp4" for i in range(4)]
    assert "1 of 5 inputs failed" in result.output and "Traceback" not in result.output


def test_a_quoted_glob_and_force(tmp_path, clips, astronaut, fixture_checkpoint):
    """A pattern takes only its matches; --force makes them again."""
    out = tmp_path / "out"
    (tmp_path / "other.mov").write_bytes(b"")  # not matched
    pattern = str(clips / "clip[13].mp4")
    command = ["--checkpoint", fixture_checkpoint, "--parts", "1", "--no-crop", "--max-frames", "2", pattern, astronaut,
               "-o", out]
    assert _swap(*command).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip1.mp4", "clip3.mp4"]
    before = _mtimes(out)
    time.sleep(0.01)
    forced = _swap(*command, "--force")
    assert forced.exit_code == 0, forced.output
    after = _mtimes(out)
    assert all(after[name] != before[name] for name in before)
    assert [r[1] for r in _rows(forced.stdout).values()] == ["done", "done"]


def test_segment_batch_writes_each_inputs_outputs_beside_under_its_name(tmp_path, clips, fixture_checkpoint):
    out = tmp_path / "parts"
    result = runner.invoke(app, ["segment", str(clips / "clip[01].mp4"), "--checkpoint", str(fixture_checkpoint),
                                 "--no-crop", "-o", str(out), "--masks", str(out), "--png-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "clip0", "clip0.legend.png", "clip0.mp4", "clip0.npz", "clip1", "clip1.legend.png", "clip1.mp4", "clip1.npz"]
    for i in (0, 1):
        assert probe(out / f"clip{i}.mp4")["frames"] == LENGTHS[i]
        assert len(list((out / f"clip{i}").glob("*.png"))) == LENGTHS[i]
        with np.load(out / f"clip{i}.npz") as masks:
            assert masks["segmentation"].shape[0] == LENGTHS[i]
    again = runner.invoke(app, ["segment", str(clips / "clip[01].mp4"), "--checkpoint", str(fixture_checkpoint),
                                "--no-crop", "-o", str(out), "--masks", str(out), "--png-dir", str(out)])
    assert again.exit_code == 0 and [r[1] for r in _rows(again.stdout).values()] == ["skipped", "skipped"]
    bad = runner.invoke(app, ["segment", str(clips), "--checkpoint", str(fixture_checkpoint), "-o", str(out),
                              "--masks", str(tmp_path / "parts.npz")])
    assert isinstance(bad.exception, CopartError) and "--masks names a folder" in str(bad.exception)


def test_a_source_without_a_face_stops_the_batch_with_one_sentence(tmp_path, clips, fixture_checkpoint):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "1", "--detector", "haar", clips, blank,
                   "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert result.stdout.count(f"No face found in source {blank}") == 4  # the first tried, then not tried
    assert result.stdout.count("not tried:") == 3
    assert "this concerns every input, so the batch stopped there" in " ".join(result.output.split())


def test_what_a_target_names(tmp_path, clips, astronaut, fixture_checkpoint):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), np.zeros((8, 8, 3), np.uint8))
    assert batch.expand(frames) is None  # a folder of images stays one video made of frames
    assert batch.expand(clips / "clip0.mp4") is None
    assert batch.expand(clips) == [clips / f"clip{i}.mp4" for i in range(4)]
    with pytest.raises(CopartError, match="No file matches the pattern"):
        batch.expand(tmp_path / "*.mkv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CopartError, match="holds neither videos"):
        batch.expand(tmp_path / "empty")

    def error(*args):
        result = _swap("--checkpoint", fixture_checkpoint, "--parts", "1", *args)
        assert isinstance(result.exception, CopartError), result.output
        return str(result.exception)

    assert "-o DIR is required" in error(clips, astronaut)
    assert "never overwrites its inputs" in error(clips, astronaut, "-o", clips)
    assert "looks like a file name" in error(clips, astronaut, "-o", tmp_path / "out.mp4")
    twins = tmp_path / "twins"
    twins.mkdir()
    shutil.copy(clips / "clip0.mp4", twins / "a.mp4")
    shutil.copy(clips / "clip0.mp4", twins / "a.mov")
    assert "would both write" in error(twins, astronaut, "-o", tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_batch_display_in_plain_lines():
    text = io.StringIO()
    with ui.BatchProgress(Console(file=text, width=200), "swap") as progress:
        progress.files(0, 2, 0)
        frames = progress.file("a.mp4")
        frames(3, 6)
        progress.files(2, 2, 12)
    lines = text.getvalue().splitlines()
    assert lines[0].startswith("swap: 0/2 files (0%), 0 frames")
    assert lines[-1].startswith("swap: 2/2 files (100%), 12 frames, ") and "frames/s" in lines[-1]


def test_torchrun_two_processes_share_the_clips(tmp_path, clips, astronaut, fixture_checkpoint):
    """torchrun --standalone --nproc_per_node 2 (gloo on the CPU): the same four outputs, each made
    by one process (no output made twice: the second would have found it there and failed
    without --force), one summary."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "copart",
         "swap", "--checkpoint", str(fixture_checkpoint), "--parts", "1", "--no-crop", "--device", "cpu",
         str(clips), str(astronaut), "-o", str(out)],
        check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [f"clip{i}.mp4" for i in range(4)]
    for i, n in enumerate(LENGTHS):
        assert probe(out / f"clip{i}.mp4")["frames"] == n
    rows = _rows(result.stdout)
    assert result.stdout.count("4 inputs: 4 done") == 1  # one process reports
    assert [rows[f"clip{i}.mp4"][1] for i in range(4)] == ["done"] * 4
    assert [rows[f"clip{i}.mp4"][4] for i in range(4)] == ["0", "1", "0", "1"]  # rank::world_size


def test_ctrl_c_keeps_the_finished_outputs_and_says_so(tmp_path):
    """Ctrl-C during the second input: the first one's output stays, and the sentence says that
    running the same command again goes on from there."""
    targets = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    outputs = {t: [tmp_path / "out" / t.name] for t in targets}
    (tmp_path / "out").mkdir()

    def job(target, output, force, reuse, frames, notice, device):
        if target.name == "b.mp4":
            raise KeyboardInterrupt
        output.write_bytes(b"made")

    with pytest.raises(KeyboardInterrupt) as stopped:
        batch.run(targets, outputs, job, device="cpu")
    assert str(stopped.value) == "interrupted; 1 finished output is kept, and the same command goes on from there"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4"]
