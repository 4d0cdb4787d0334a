"""What copart reads: a video cut short is said to be cut short (never a shorter result that
exits 0), and a missing input is named before anything is said about the outputs."""

import shutil
import subprocess
from pathlib import Path

import av
import pytest

from copart.app import main
from copart.media.read import MediaReader, probe
from copart.models.errors import CopartError

MODEL = ["--no-crop", "--batch-size", "4"]


def _ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *map(str, args)], check=True)


def _cut_at(path: Path, out: Path, share: float = 0.55) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * share)])
    return out


def _decoded(path) -> int:
    """How many frames PyAV decodes before the file gives out (its damaged tail ends the count)."""
    n = 0
    with av.open(str(path)) as c:
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


@pytest.fixture(scope="module")
def faststart(tmp_path_factory, carphone):
    """Carphone (120 frames, 4.00 s) as an MP4 with its index (moov) first, and that file cut at
    55 % of its bytes: the index still lists 120 frames, about 62 of them are there."""
    folder = tmp_path_factory.mktemp("faststart")
    whole = folder / "whole.mp4"
    _ffmpeg("-i", carphone, "-c", "copy", "-movflags", "+faststart", whole)
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index first
    cut = _cut_at(whole, folder / "cut.mp4")
    with av.open(str(cut)) as c:  # still readable, and its header still promises the whole clip
        assert c.streams.video[0].frames == 120
    readable = _decoded(cut)
    assert 50 < readable < 70, readable
    return whole, cut, readable


def _main(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


def _error(err: str) -> str:
    """The error, as one line (the terminal may wrap it)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Error:"))
    return " ".join(" ".join(lines[start:]).split())


def _ended_early(what: str, path: Path) -> str:
    return f"Error: {what} {path} ended early: it can be read only to "


# 16. A video cut short but still readable ---------------------------------------------------------


def _read_all(path, **kwargs) -> int:
    with MediaReader(path, **kwargs) as reader:
        return sum(1 for _ in reader.frames())


def test_the_reader_says_a_cut_video_ended_early_when_it_opens_it(faststart):
    """A look at the tail, before any frame is decoded: the error comes before any work."""
    whole, cut, readable = faststart
    assert _read_all(whole) == 120  # the whole file: no complaint
    with pytest.raises(CopartError) as err:
        MediaReader(cut, "Target")
    text = str(err.value)
    assert text.startswith(f"Target {cut} ended early: it can be read only to 2."), text
    frames = int(text.split(" (")[1].split()[0])  # packets that are whole; the decoder may stop a frame or two before
    assert readable <= frames <= readable + 3 and f"({frames} of its 120 frames) of the 4.00 s its header gives, " \
        f"so it looks cut short; copy or download it again, or keep to the part that reads with --end 2." in text, text


def test_the_reader_says_so_at_the_end_when_the_tail_looked_whole(faststart, monkeypatch):
    """The frames decoded are checked against the header at the end too (when the look at the
    tail cannot tell): the frame count and the length both fall short."""
    monkeypatch.setattr(MediaReader, "_check_tail", lambda self: None)
    _, cut, readable = faststart
    with MediaReader(cut, "Target") as reader:
        frames = reader.frames()
        for _ in range(readable):
            next(frames)
        with pytest.raises(CopartError) as err:
            next(frames)
    assert str(err.value) == (f"Target {cut} ended early: it can be read only to 2.07 s ({readable} of its 120 "
                              f"frames) of the 4.00 s its header gives, so it looks cut short; copy or download it "
                              f"again, or keep to the part that reads with --end 2.")


@pytest.mark.parametrize("tail", [True, False], ids=["on-opening", "at-the-end"])
@pytest.mark.parametrize("limit", [{"max_frames": 30}, {"end": 1.0}, {"start": 0.5, "end": 1.5}])
def test_a_range_inside_the_readable_part_reads_without_complaint(faststart, monkeypatch, limit, tail):
    if not tail:
        monkeypatch.setattr(MediaReader, "_check_tail", lambda self: None)
    assert _read_all(faststart[1], **limit) == 30


@pytest.mark.parametrize("tail", [True, False], ids=["on-opening", "at-the-end"])
@pytest.mark.parametrize("limit", [{"max_frames": 100}, {"end": 3.5}, {"start": 1.0}, {"start": 3.0}])
def test_a_range_that_reaches_past_the_cut_is_an_error(faststart, monkeypatch, limit, tail):
    if not tail:
        monkeypatch.setattr(MediaReader, "_check_tail", lambda self: None)
    with pytest.raises(CopartError, match=r"ended early: it can be read only to 2\.[01]\d s") as err:
        _read_all(faststart[1], **limit)
    assert ("--end 2." in str(err.value)) == (limit.get("start", 0) < 2), err.value  # advice only inside the range


def test_files_that_are_whole_are_not_taken_for_cut(tmp_path, carphone, bigbuckbunny):
    """Timing that a cut file would show but a whole one may have: an edit list that starts
    between key frames (fewer frames decode than the index lists), a last frame held long
    (variable frame rate), a transport stream starting at 1.4 s, Matroska with its durations in
    tags, and a GIF."""
    cases = {
        "edit-list.mp4": ["-ss", "1.1", "-i", bigbuckbunny, "-c", "copy"],
        "held.mp4": ["-i", carphone, "-vf", "setpts='if(lt(N,119),PTS,PTS+2/TB)'", "-fps_mode", "vfr",
                     "-c:v", "libx264"],
        "late.ts": ["-i", bigbuckbunny, "-c", "copy"],
        "clip.mkv": ["-i", bigbuckbunny, "-c", "copy"],
        "clip.gif": ["-i", carphone, "-frames:v", "20"],
    }
    for name, args in cases.items():
        _ffmpeg(*args, tmp_path / name)
        assert _read_all(tmp_path / name) == probe(tmp_path / name)["frames"], name
    with av.open(str(tmp_path / "edit-list.mp4")) as c:
        assert c.streams.video[0].frames > _decoded(tmp_path / "edit-list.mp4")  # the count alone would be wrong


def test_a_cut_matroska_file_is_said_to_be_cut(tmp_path, bigbuckbunny):
    """Matroska keeps each track's duration in a tag, which a cut file keeps."""
    _ffmpeg("-i", bigbuckbunny, "-c", "copy", tmp_path / "whole.mkv")
    cut = _cut_at(tmp_path / "whole.mkv", tmp_path / "cut.mkv")
    with pytest.raises(CopartError, match=r"ended early: it can be read only to 2\.\d\d s of the 5\.28 s"):
        MediaReader(cut)


def _no_model(monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for an input that ended early")

    monkeypatch.setattr("copart.loading.resolve_model", no_model)


def test_swap_of_a_cut_video_fails_before_any_work_and_writes_nothing(tmp_path, capsys, monkeypatch, faststart,
                                                                      astronaut, fixture_checkpoint):
    _, cut, readable = faststart
    target = shutil.copy(cut, tmp_path / "cut.mp4")
    with monkeypatch.context() as patch:
        _no_model(patch)
        code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL, target,
                               astronaut)
    assert code == 2, out + err
    text = _error(err)
    assert text.startswith(_ended_early("Target", target)) and " of its 120 frames)" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]  # no output, no temporary file

    # A range inside the part that reads is what the user asked for: it is swapped.
    code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL,
                           "--max-frames", "20", target, astronaut, "-o", tmp_path / "first.mp4")
    assert code == 0, err
    assert probe(tmp_path / "first.mp4")["frames"] == 20
    code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL,
                           "--start", "0.5", "--end", "1.5", target, astronaut, "-o", tmp_path / "range.mp4")
    assert code == 0, err
    assert probe(tmp_path / "range.mp4")["frames"] == 30


def test_swap_of_big_buck_bunny_cut_short(tmp_path, capsys, monkeypatch, bigbuckbunny, astronaut,
                                          fixture_checkpoint):
    """The issue's case: Big Buck Bunny (132 frames, with sound), index first, cut at 55 %; and
    the same with the look at the tail switched off, so that the frames are swapped and the
    check at the end, after 60 frames, stops the run and takes its file back."""
    whole = tmp_path / "bbb.mp4"
    _ffmpeg("-i", bigbuckbunny, "-c", "copy", "-movflags", "+faststart", whole)
    cut = _cut_at(whole, tmp_path / "cut.mp4")
    whole.unlink()
    assert _decoded(cut) == 60
    for tail in (True, False):
        with monkeypatch.context() as patch:
            if tail:
                _no_model(patch)  # the error comes before the model is read
            else:
                patch.setattr(MediaReader, "_check_tail", lambda self: None)
            code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL, cut,
                                   astronaut)
        assert code == 2, out + err
        text = _error(err)
        assert text.startswith(_ended_early("Target", cut)), text
        assert "2.40 s (60 of its 132 frames) of the 5.28 s its header gives" in text and text.endswith("--end 2.4.")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


def test_a_cut_source_video_gives_the_frames_it_holds(tmp_path, capsys, faststart, astronaut, fixture_checkpoint):
    _, cut, _ = faststart
    code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL,
                           "--max-frames", "2", astronaut, cut, "--source-frame", "10", "-o", tmp_path / "a.png")
    assert code == 0, err
    code, out, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", *MODEL,
                           astronaut, cut, "--source-frame", "100", "-o", tmp_path / "b.png")
    assert code == 2 and _error(err).startswith(_ended_early("Source", cut)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_segment_of_a_cut_video_fails_and_writes_nothing(tmp_path, capsys, faststart, fixture_checkpoint):
    _, cut, _ = faststart
    target = shutil.copy(cut, tmp_path / "cut.mp4")
    code, out, err = _main(capsys, "segment", "--checkpoint", fixture_checkpoint, *MODEL, target,
                           "--masks", tmp_path / "m.npz", "--png-dir", tmp_path / "labels")
    assert code == 2, out + err
    assert _error(err).startswith(_ended_early("Input", target)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]
    code, out, err = _main(capsys, "segment", "--checkpoint", fixture_checkpoint, *MODEL, "--end", "1", target)
    assert code == 0, err
    assert probe(tmp_path / "cut.parts.mp4")["frames"] == 30


# 18. Inputs are checked before outputs ------------------------------------------------------------


@pytest.fixture
def clip(tmp_path, carphone):
    """A short clip in a folder of its own, with the outputs of an earlier run beside it."""
    target = tmp_path / "clip.mp4"
    _ffmpeg("-i", carphone, "-frames:v", "4", target)
    for name in ("clip.swap.mp4", "clip.parts.mp4", "clip.legend.png"):
        (tmp_path / name).write_bytes(b"an earlier output")
    return target


@pytest.mark.parametrize("missing", ["source", "checkpoint", "preset", "face"])
def test_swap_names_a_missing_input_before_an_existing_output(tmp_path, capsys, clip, astronaut, fixture_checkpoint,
                                                              missing):
    gone = tmp_path / {"source": "face.png", "checkpoint": "model.pth", "preset": "model.yaml",
                       "face": "who.png"}[missing]
    source = gone if missing == "source" else astronaut
    model = ["--checkpoint", gone if missing == "checkpoint" else fixture_checkpoint]
    if missing == "preset":
        model += ["--preset", gone]
    extra = ["--face", gone] if missing == "face" else ["--no-crop"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, out, err = _main(capsys, "swap", *model, "--parts", "2", *extra, clip, source)
    assert code == 2, out + err
    text = _error(err)
    assert "already exists" not in text and str(gone) in text, text
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("missing", ["checkpoint", "preset", "face"])
def test_segment_names_a_missing_input_before_an_existing_output(tmp_path, capsys, clip, fixture_checkpoint, missing):
    gone = tmp_path / {"checkpoint": "model.pth", "preset": "model.yaml", "face": "who.png"}[missing]
    model = ["--checkpoint", gone if missing == "checkpoint" else fixture_checkpoint]
    if missing == "preset":
        model += ["--preset", gone]
    extra = ["--face", gone] if missing == "face" else ["--no-crop"]
    code, out, err = _main(capsys, "segment", *model, *extra, clip)
    assert code == 2, out + err
    text = _error(err)
    assert "already exists" not in text and str(gone) in text, text


def test_the_messages_for_a_missing_source_and_checkpoint(tmp_path, capsys, clip, fixture_checkpoint):
    code, _, err = _main(capsys, "swap", "--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", clip,
                         tmp_path / "face.png")
    assert (code, _error(err)) == (2, f"Error: Source {tmp_path / 'face.png'} does not exist.")
    code, _, err = _main(capsys, "segment", "--checkpoint", tmp_path / "model.pth", "--no-crop", clip)
    assert (code, _error(err)) == (2, f"Error: Checkpoint {tmp_path / 'model.pth'} does not exist.")


def test_train_and_parts_name_a_missing_input_before_an_existing_output(tmp_path, capsys, fixture_checkpoint):
    from copart.training.synthetic import generate

    data = tmp_path / "data"
    generate(data, videos=3, frames=8, size=64, test=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("an earlier run's folder")
    code, _, err = _main(capsys, "train", "--preset", "cpu-64-sem-5segments", "--data", data, "--out", run,
                         "--steps", "1", "--init", tmp_path / "start.pth")
    assert (code, _error(err)) == (2, f"Error: Checkpoint {tmp_path / 'start.pth'} does not exist.")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    named = tmp_path / "named.pth"
    named.write_bytes(b"an earlier output")
    code, _, err = _main(capsys, "parts", tmp_path / "model.pth", "--name", "hair=1", "-o", named)
    assert (code, _error(err)) == (2, f"Error: Checkpoint {tmp_path / 'model.pth'} does not exist.")
    assert named.read_bytes() == b"an earlier output"


@pytest.mark.parametrize("command", ["swap", "segment", "masks"])
def test_the_reference_picture_and_the_checkpoint_are_inputs_too(tmp_path, capsys, astronaut, fixture_checkpoint,
                                                                 command):
    """Even with --force, no output replaces the --face picture or the model file."""
    target, ref = shutil.copy(astronaut, tmp_path / "target.png"), shutil.copy(astronaut, tmp_path / "her.png")
    model = shutil.copy(fixture_checkpoint, tmp_path / "model.npz")  # a name --masks takes
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = {
        "swap": ["swap", "--parts", "2", target, astronaut, "-o", ref],
        "segment": ["segment", target, "-o", ref],
        "masks": ["segment", target, "--masks", model, "-o", tmp_path / "out.png"],
    }[command]
    code, _, err = _main(capsys, *args, "--checkpoint", model, "--detector", "haar", "--face", ref, "--force")
    gone = model if command == "masks" else ref
    assert (code, _error(err)) == (2, f"Error: Output {gone} is an input file; copart never overwrites its inputs.")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_eval_never_plots_over_its_inputs_and_checks_the_plot_folder_first(tmp_path, capsys, monkeypatch,
                                                                         fixture_checkpoint):
    from copart.training.synthetic import generate

    generate(tmp_path / "data", videos=3, frames=8, size=64, test=1)
    root = tmp_path / "data" / "eval"
    image, mask = sorted((root / "test").iterdir())[0], sorted((root / "masks" / "test").iterdir())[0]
    before = {p: p.read_bytes() for p in (image, mask)}
    code, _, err = _main(capsys, "eval", root, "--checkpoint", tmp_path / "model.pth", "--plot", tmp_path / "p.txt")
    assert (code, _error(err)) == (2, f"Error: Checkpoint {tmp_path / 'model.pth'} does not exist.")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the plot's path was checked")

    monkeypatch.setattr("copart.loading.resolve_model", no_model)
    for plot in (image, mask):
        code, _, err = _main(capsys, "eval", root, "--checkpoint", fixture_checkpoint, "--plot", plot)
        assert (code, _error(err)) == (2, f"Error: Output {plot} is an input file; copart never overwrites its "
                                          f"inputs.")
    code, _, err = _main(capsys, "eval", root, "--checkpoint", fixture_checkpoint, "--plot", tmp_path / "no" / "p.png")
    assert (code, _error(err)) == (2, f"Error: Output folder {tmp_path / 'no'} does not exist.")
    assert {p: p.read_bytes() for p in (image, mask)} == before
