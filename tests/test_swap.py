"""copart swap end to end on real media, and the pipeline against the model core."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from copart.app import app
from copart.inference import PartSwapper, to_tensor
from copart.media import faces
from copart.media.faces import FaceTrack, HaarDetector
from copart.media.pipeline import WHOLE, batched_apply
from copart.media.read import MediaReader, probe, read_image
from copart.media.write import VideoWriter
from copart.models.checkpoint import load_model
from copart.models.errors import CopartError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _swap(*args):
    result = runner.invoke(app, ["swap", *map(str, args)])
    return result


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _carphone_boxes(carphone, detect_every=None):
    """The boxes `copart swap --detector haar` uses (its track: detections 5 times a second),
    or with the detector run every ``detect_every`` frames."""
    with MediaReader(carphone) as reader:
        track = faces.make_track("haar", "cpu", 0.3, reader.fps, [])
        assert isinstance(track.detector, HaarDetector) and track.detect_every == 6  # 30 frames/s
        if detect_every is not None:
            track.detect_every = detect_every
        return [box for _, box in track.track(reader.frames())], track


@pytest.mark.parametrize("detect_every", [1, None])
def test_carphone_track_covers_the_clip_without_jitter(carphone, detect_every):
    boxes, track = _carphone_boxes(carphone, detect_every)
    assert len(boxes) == 120
    assert track.detections < 0.8 * 120  # the Haar cascade alone misses many frames ...
    assert sum(b is not None for b in boxes) >= 0.95 * 120  # ... the track carries the box
    centres = np.array([(b.cx, b.cy) for b in boxes if b is not None])
    jitter = np.abs(np.diff(centres, axis=0)).sum(1)
    assert jitter.mean() < 1.5 and jitter.max() < 6, (jitter.mean(), jitter.max())


def test_carphone_detecting_5_times_a_second_keeps_the_boxes_of_every_frame(carphone):
    """The command's track (the detector on every 6th frame at 30 frames/s, and again after a
    miss) gives every frame a box, about where detecting on every frame puts it, and no
    shakier, for fewer detector runs."""
    every, dense = _carphone_boxes(carphone, 1)
    sparse, track = _carphone_boxes(carphone)
    assert dense.detector_calls == 120 and track.detector_calls < 0.7 * 120, track.detector_calls
    assert [b is None for b in sparse] == [b is None for b in every]
    apart = [math.hypot(a.cx - b.cx, a.cy - b.cy) for a, b in zip(every, sparse) if a is not None]
    sides = [abs(a.side - b.side) for a, b in zip(every, sparse) if a is not None]
    assert max(apart) < 7 and max(sides) < 7, (max(apart), max(sides))

    def jitter(boxes):
        centres = np.array([(b.cx, b.cy) for b in boxes if b is not None])
        return np.abs(np.diff(centres, axis=0)).sum(1).mean()

    assert jitter(sparse) <= jitter(every), (jitter(sparse), jitter(every))
    print("CARPHONE: detector runs", track.detector_calls, "of 120; apart", max(apart), "px; jitter",
          jitter(sparse), "against", jitter(every))


def _luma(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def test_carphone_full_frame_swap(tmp_path, carphone, astronaut, fixture_checkpoint):
    """Real talking head, full frames, the no-download detector (--detector haar, the boxes that
    _carphone_boxes compares with). Outside the pasted face region the output equals the input
    up to encoding loss: compared on the Y plane with the input re-encoded through the same
    settings (the default --crf 18)."""
    out = tmp_path / "carphone.swap.mp4"
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "hair", "--detector", "haar",
                   carphone, astronaut, "-o", out)
    assert result.exit_code == 0, result.output
    assert "Swapped 120 frames" in result.output
    src, dst = probe(carphone), probe(out)
    for key in ("frames", "fps", "width", "height"):
        assert dst[key] == src[key], key
    assert abs(dst["duration"] - src["duration"]) < 1e-3
    assert dst["codec"] == "h264" and dst["pix_fmt"] == "yuv420p"

    reference = tmp_path / "reencoded.mp4"
    writer = VideoWriter(reference, 176, 144, src["fps"], None)
    for image in _frames(carphone):
        writer.write(image)
    writer.close()
    boxes, _ = _carphone_boxes(carphone)
    assert sum(b is not None for b in boxes) >= 114
    values = []
    for ref, got, box in zip(_luma(reference), _luma(out), boxes):
        keep = np.ones(ref.shape, bool)
        if box is not None:
            x0, y0, x1, y1 = box.bounds()
            keep[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
        values.append(_psnr(ref[keep], got[keep]))
    assert min(values) >= 40, (min(values), np.mean(values))


def test_pixels_outside_the_face_box_are_untouched_before_encoding(carphone, astronaut, fixture_checkpoint):
    from copart.media.pipeline import put

    model = load_model(fixture_checkpoint).model
    swapper = PartSwapper(model, read_image(astronaut)[:128, :128], [3, 4, 5])
    with MediaReader(carphone, max_frames=20) as reader:
        track = FaceTrack(HaarDetector(), 0.3, faces.TRACK_WINDOW, 60)
        pasted = 0
        for frame, box, patch in batched_apply(track.track(reader.frames()), 128, 4, swapper):
            out = put(frame.image, patch, box) if patch is not None else frame.image
            keep = np.ones(out.shape[:2], bool)
            if box is not None:
                x0, y0, x1, y1 = box.bounds()
                keep[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
                pasted += 1
                assert not np.array_equal(out, frame.image)
            assert np.array_equal(out[keep], frame.image[keep])
    assert pasted == 20


def test_audio_is_copied_unchanged(tmp_path, bigbuckbunny, astronaut, fixture_checkpoint):
    out = tmp_path / "bunny.mp4"
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "1", "--no-crop", bigbuckbunny, astronaut,
                   "-o", out)
    assert result.exit_code == 0, result.output
    src, dst = probe(bigbuckbunny), probe(out)
    assert dst["frames"] == src["frames"] and dst["fps"] == src["fps"]
    assert dst["audio"] == src["audio"] and dst["audio"][0]["codec"] == "aac"
    with av.open(str(bigbuckbunny)) as a, av.open(str(out)) as b:
        pa = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        pb = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
    assert pa == pb  # the very same packets


def test_cli_image_path_matches_the_core(tmp_path, fixture_checkpoint, reference_tensors):
    """An image target at the model's resolution with --no-crop: PNG output is lossless,
    so it must equal the core's part swap of the same pixels."""
    import cv2

    target_rgb = (reference_tensors["target"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    source_rgb = (reference_tensors["source"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    target, source = tmp_path / "t.png", tmp_path / "s.png"
    cv2.imwrite(str(target), cv2.cvtColor(target_rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(source), cv2.cvtColor(source_rgb, cv2.COLOR_RGB2BGR))
    model = load_model(fixture_checkpoint).model
    outputs = {}
    for name, flags in {"soft": [], "hard": ["--hard"], "source": ["--source-mask"]}.items():
        out = tmp_path / f"{name}.png"
        result = _swap("--checkpoint", fixture_checkpoint, "--parts", "1,2", "--no-crop", *flags, target, source,
                       "-o", out)
        assert result.exit_code == 0, result.output
        outputs[name] = read_image(out)
        with torch.no_grad():
            state = model.prepare_source(to_tensor([source_rgb], "cpu"))
            core = model.swap(state, to_tensor([target_rgb], "cpu"), [1, 2], hard=name == "hard",
                              use_source_segmentation=name == "source")
        expected = (core[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.abs(outputs[name].astype(int) - expected.astype(int)).max() <= 1
    # The fixture's random weights give near-uniform part maps, so the modes differ little, but they differ.
    assert np.abs(outputs["soft"].astype(int) - outputs["hard"]).max() > 2
    assert np.abs(outputs["soft"].astype(int) - outputs["source"]).sum() > 100

    # Names and channel numbers resolve to the same mask.
    by_name, by_number = tmp_path / "name.png", tmp_path / "number.png"
    assert _swap("--checkpoint", fixture_checkpoint, "--parts", "hair", "--no-crop", target, source,
                 "-o", by_name).exit_code == 0
    assert _swap("--checkpoint", fixture_checkpoint, "--parts", "3,4", "--parts", "5", "--no-crop", target,
                 source, "-o", by_number).exit_code == 0
    assert np.array_equal(read_image(by_name), read_image(by_number))


def test_pipeline_batches_equal_frame_by_frame(carphone, fixture_checkpoint, astronaut):
    model = load_model(fixture_checkpoint).model
    source = read_image(astronaut)[:128, :128]
    swapper = PartSwapper(model, source, [3, 4, 5])
    with MediaReader(carphone, max_frames=6) as reader:
        frames = list(reader.frames())
    one = [o for _, _, o in batched_apply(((f, WHOLE) for f in frames), 128, 1, swapper)]
    four = [o for _, _, o in batched_apply(((f, WHOLE) for f in frames), 128, 4, swapper)]
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(one, four))


def test_rotation_gif_odd_size_and_range(tmp_path, carphone, astronaut, fixture_checkpoint):
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    # As a phone records: frames stored sideways, a display matrix that turns them upright.
    sideways, rotated = tmp_path / "sideways.mp4", tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(carphone), "-vf", "transpose=1", "-c:v", "libx264",
                    "-crf", "12", str(sideways)], check=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-display_rotation", "90", "-i", str(sideways), "-c", "copy",
                    str(rotated)], check=True)
    assert (probe(rotated)["width"], probe(rotated)["height"]) == (144, 176)  # as stored
    out = tmp_path / "rotated.swap.mp4"
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "hair", "--detector", "haar", rotated, astronaut,
                   "-o", out)
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert (info["width"], info["height"]) == (176, 144) and info["frames"] == 120  # upright, as displayed
    assert "without a face" not in result.output  # the face is found because frames were turned upright
    upright = _frames(carphone)[0].astype(float)
    assert _psnr(upright[:, :40], _frames(out)[0][:, :40]) > 30  # the left edge, outside the face box

    gif = tmp_path / "clip.gif"
    odd = tmp_path / "odd.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(carphone), "-frames:v", "12", str(gif)], check=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(carphone), "-vf", "format=yuv444p,crop=175:143:0:0", "-frames:v", "10",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", str(odd)], check=True)
    assert (probe(odd)["width"], probe(odd)["height"]) == (175, 143)
    for clip, frames in ((gif, 12), (odd, 10)):
        result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", clip, astronaut)
        assert result.exit_code == 0, result.output
        info = probe(clip.with_name(f"{clip.stem}.swap.mp4"))
        assert info["frames"] == frames and info["pix_fmt"] == "yuv420p"
    assert (probe(odd.with_name("odd.swap.mp4"))["width"], probe(odd.with_name("odd.swap.mp4"))["height"]) == (176, 144)

    ranged = tmp_path / "range.mp4"
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", "--start", "1", "--end", "2",
                   carphone, astronaut, "-o", ranged)
    assert result.exit_code == 0, result.output
    info = probe(ranged)
    assert info["frames"] == 30 and abs(info["duration"] - 1.0) < 0.05


def _audio_only(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for i in range(5):
            frame.pts = i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _cut(video, path, size=20_000):
    """The first ``size`` bytes of ``video``, whose index (the moov atom) sits at its end."""
    data = video.read_bytes()
    assert data[4:8] == b"ftyp" and data.rfind(b"moov") > size
    path.write_bytes(data[:size])
    return path


def test_a_cut_file_is_said_to_be_truncated(tmp_path, carphone, astronaut):
    with pytest.raises(CopartError) as err:
        MediaReader(_cut(carphone, tmp_path / "cut.mp4"))
    assert str(err.value).startswith(f"Video {tmp_path / 'cut.mp4'} looks incomplete or truncated: it starts as an "
                                     f"MP4/MOV video but cannot be read (")
    assert str(err.value).endswith("); copy or download it again.")
    cut = tmp_path / "cut.png"
    cut.write_bytes(astronaut.read_bytes()[:20_000])
    with pytest.raises(CopartError) as err:
        read_image(cut, "Source")
    assert str(err.value) == (f"Source {cut} looks incomplete or truncated: it starts as a PNG image but cannot be "
                              f"read; copy or download it again.")
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    with pytest.raises(CopartError, match="is not a video or image copart can read"):
        MediaReader(text)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("unreadable", "is not a video or image copart can read"),
        ("truncated", "looks incomplete or truncated: it starts as an MP4/MOV video but cannot be read"),
        ("no_video", "has no video stream"),
        ("no_face", "No face found in source"),
        ("unknown_part", "Unknown part 'nose'"),
        ("out_of_range", "Part number 11 is out of range"),
        ("k_mismatch", "K=10 parts but --k 5"),
        ("exists", "already exists; pass --force"),
        ("is_input", "never overwrites its inputs"),
    ],
)
def test_bad_input_is_one_sentence_and_leaves_no_file(tmp_path, case, message, carphone, astronaut,
                                                      fixture_checkpoint):
    target, source, parts, extra = carphone, astronaut, "hair", []
    out = tmp_path / "out.mp4"
    if case == "missing":
        target = tmp_path / "nothere.mp4"
    elif case == "unreadable":
        target = tmp_path / "text.mp4"
        target.write_text("not a video")
    elif case == "truncated":
        target = _cut(carphone, tmp_path / "cut.mp4")
    elif case == "no_video":
        target = tmp_path / "sound.m4a"
        _audio_only(target)
    elif case == "no_face":
        source = tmp_path / "grey.png"
        import cv2

        cv2.imwrite(str(source), np.full((200, 200, 3), 128, np.uint8))
    elif case == "unknown_part":
        parts = "nose"
    elif case == "out_of_range":
        parts = "11"
    elif case == "k_mismatch":
        extra = ["--k", "5"]
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "is_input":
        out = carphone
    before = sorted(p.name for p in tmp_path.iterdir())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "copart", "swap", "--checkpoint", str(fixture_checkpoint), "--parts", parts,
         "--detector", "haar", *extra, str(target), str(source), "-o", str(out)],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "exists":
        assert out.read_bytes() == b"keep me"


def test_empty_and_damaged_videos_are_refused(tmp_path, carphone, astronaut, fixture_checkpoint):
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    empty, damaged = tmp_path / "empty.mp4", tmp_path / "damaged.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1", "-frames:v", "0",
                    "-c:v", "libx264", str(empty)], check=True)
    damaged.write_bytes(carphone.read_bytes()[:3000])
    for clip in (empty, damaged):
        result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", clip, astronaut)
        assert isinstance(result.exception, CopartError)
        assert any(m in str(result.exception) for m in ("no video stream", "no frames", "cannot be", "not a video")), result.exception
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.mp4", "empty.mp4"]


def test_interrupted_run_leaves_no_output(tmp_path, bigbuckbunny, astronaut, fixture_checkpoint):
    out = tmp_path / "out.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "copart", "swap", "--checkpoint", str(fixture_checkpoint), "--parts", "2",
         "--no-crop", "--batch-size", "1", str(bigbuckbunny), str(astronaut), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.*")), "the run never started writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_outputs_have_ordinary_permissions(tmp_path, carphone, astronaut, fixture_checkpoint):
    out = tmp_path / "o.mp4"
    old = os.umask(0o022)
    try:
        assert _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", "--max-frames", "2", carphone,
                     astronaut, "-o", out).exit_code == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644


def test_variable_frame_rate_and_late_start_keep_their_timestamps(tmp_path, carphone, astronaut, fixture_checkpoint):
    from fractions import Fraction

    frames = _frames(carphone)[:40]
    clip = tmp_path / "vfr.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
            t += 33 if i < 20 else 100  # 30 frames/s, then 10
        for packet in stream.encode(None):
            out.mux(packet)

    def times(path):
        with av.open(str(path)) as c:
            return [round(f.time, 4) for f in c.decode(video=0)]

    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", clip, astronaut,
                   "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    assert times(tmp_path / "out.mp4") == times(clip)


def test_late_starting_transport_stream_and_audio_mp4_cannot_hold(tmp_path, bigbuckbunny, astronaut,
                                                                  fixture_checkpoint):
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    ts, avi = tmp_path / "clip.ts", tmp_path / "clip.avi"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(bigbuckbunny), "-t", "3", "-c", "copy", str(ts)], check=True)
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(bigbuckbunny), "-t", "1", "-vf", "scale=160:90",
                    "-c:v", "mpeg4", "-c:a", "adpcm_ima_wav", str(avi)], check=True)
    # --start/--end count from the stream's first timestamp (1.4 s in MPEG-TS).
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", "--start", "1", "--end", "2",
                   ts, astronaut, "-o", tmp_path / "ts.mp4")
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "ts.mp4")
    assert info["frames"] == 25 and abs(info["audio"][0]["duration"] - 1.0) < 0.1
    # An audio codec MP4 cannot carry is left out with a notice, not a crash.
    result = _swap("--checkpoint", fixture_checkpoint, "--parts", "2", "--no-crop", avi, astronaut,
                   "-o", tmp_path / "avi.mp4")
    assert result.exit_code == 0, result.output
    assert "cannot be copied into MP4" in result.output
    assert probe(tmp_path / "avi.mp4")["audio"] == [] and probe(tmp_path / "avi.mp4")["frames"] == 25
