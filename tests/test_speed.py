"""The run-time policy (precision, batch size, threads, memory layout) and the threaded
pipeline: order kept, errors and Ctrl-C carried to the caller, nothing left behind."""

import copy
import threading
import time

import numpy as np
import pytest
import torch

from copart import inference
from copart.inference import PartSwapper, Segmenter
from copart.media import faces
from copart.media.faces import FaceTrack
from copart.media.pipeline import WHOLE, batched_apply, stream_video, with_crops
from copart.media.read import MediaReader, probe, read_image
from copart.models.checkpoint import load_model
from copart.models.errors import CopartError

INTEL, AMD = "GenuineIntel", "AuthenticAMD"


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with the given vendor and /proc/cpuinfo flags."""

    def pretend(vendor, *flags):
        monkeypatch.setattr(inference, "cpu_features", lambda: (vendor, frozenset(flags)))

    return pretend


@pytest.mark.parametrize("vendor, flags, expected", [
    (INTEL, ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"), "bf16"),  # Sapphire Rapids: AMX
    (INTEL, ("avx2", "avx512f", "avx512_bf16"), "fp32"),  # AVX-512 BF16 without AMX: slower than fp32
    (AMD, ("avx2", "avx512f", "avx512_bf16"), "bf16"),  # Zen 4: VDPBF16PS at twice the fp32 rate
    (AMD, ("avx2",), "fp32"),
    (INTEL, ("avx2", "avx512f"), "fp32"),
    ("", (), "fp32"),  # no /proc/cpuinfo
])
def test_auto_precision_on_cpus(cpu, vendor, flags, expected):
    cpu(vendor, *flags)
    assert inference.auto_precision("cpu") == expected
    assert inference.resolve_precision("auto", "cpu") == expected
    for given in ("fp32", "bf16", "fp16"):  # an explicit choice always stands
        assert inference.resolve_precision(given, "cpu") == given


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp32")])
def test_auto_precision_on_cuda(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert inference.auto_precision("cuda") == expected
    assert inference.auto_precision("cuda:1") == expected


def test_the_real_cpu_flags_are_read():
    vendor, flags = inference.cpu_features()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    assert "fpu" in flags or "sse2" in flags or "neon" in flags or "fp" in flags


def test_unknown_precision_is_one_sentence():
    with pytest.raises(CopartError, match="Unknown precision 'fp8'"):
        inference.resolve_precision("fp8", "cpu")


def test_batch_size_auto_per_device():
    assert inference.resolve_batch_size("auto", "cpu") == 1
    assert inference.resolve_batch_size(None, "cpu") == 1
    assert inference.resolve_batch_size("auto", "cuda") == inference.AUTO_BATCH["cuda"] > 1
    assert inference.resolve_batch_size("3", "cpu") == inference.resolve_batch_size(3, "cuda") == 3
    with pytest.raises(CopartError):
        inference.resolve_batch_size("many", "cpu")


def test_threads_follow_the_physical_cores_unless_the_user_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(inference, "physical_cores", lambda: 3)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert inference.set_compute_threads() == 1  # the user's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert inference.set_compute_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_physical_cores_count_cores_not_hyperthreads(monkeypatch, tmp_path):
    import os
    from pathlib import Path

    # Four logical CPUs, two cores with two threads each; the process may use CPUs 0, 1 and 2.
    real = Path
    for cpu, core in enumerate((0, 0, 1, 1)):
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "core_id").write_text(f"{core}\n")
        (folder / "physical_package_id").write_text("0\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})

    def fake_path(text, *rest):
        text = str(text)
        if text.startswith("/sys/devices/system/cpu/"):
            return real(tmp_path, text[len("/sys/devices/system/cpu/"):], *rest)
        if text == "/sys/fs/cgroup/cpu.max":
            return real(tmp_path, "cpu.max")
        return real(text, *rest)

    monkeypatch.setattr(inference, "Path", fake_path)
    assert inference.physical_cores() == 2
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # a one-CPU quota
    assert inference.physical_cores() == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert inference.physical_cores() == 2


def test_channels_last_changes_no_result(fixture_checkpoint, astronaut, carphone):
    """The CPU's channels-last layout sums in another order: the same pictures (1e-6 in float,
    at most 1 of 255 in a few pixels), the same part maps to float16 rounding."""
    model = load_model(fixture_checkpoint).model
    source = read_image(astronaut)[:128, :128]
    with MediaReader(carphone, max_frames=3) as reader:
        crops = [f.image[:128, :128] for f in reader.frames()]
    for hard, source_mask in ((False, False), (True, False), (False, True)):
        plain = PartSwapper(copy.deepcopy(model), source, [1, 2], "cpu", "fp32", hard, source_mask, channels_last=False)
        fast = PartSwapper(copy.deepcopy(model), source, [1, 2], "cpu", "fp32", hard, source_mask, channels_last=True)
        for a, b in zip(plain(crops), fast(crops)):
            diff = np.abs(a.astype(int) - b)
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    plain = Segmenter(copy.deepcopy(model), "cpu", "fp32", channels_last=False)(crops)
    fast = Segmenter(copy.deepcopy(model), "cpu", "fp32", channels_last=True)(crops)
    for a, b in zip(plain, fast):
        assert a["segmentation"].flags.c_contiguous and b["segmentation"].flags.c_contiguous
        assert np.abs(a["segmentation"].astype(np.float32) - b["segmentation"]).max() <= 1e-3
        assert np.abs(a["shift"] - b["shift"]).max() <= 1e-5


# The threaded pipeline, with a stand-in for the model.

class _Reader:
    """A MediaReader stand-in: ``n`` numbered frames, optionally failing at frame ``fail``."""

    what, path, fps, audio_streams, offset = "Video", "clip.mp4", 25, [], 0.0

    def __init__(self, n, fail=None, shape=(48, 64)):
        self.n, self.fail, self.shape = n, fail, shape
        self.estimated_frames = n
        self.closed = False

    def frames(self, on_audio=None):
        from fractions import Fraction

        from copart.media.read import Frame

        try:
            for i in range(self.n):
                if i == self.fail:
                    raise CopartError(f"frame {i} cannot be decoded")
                yield Frame(np.full((*self.shape, 3), i % 256, np.uint8), i, i, Fraction(1, 25))
        finally:
            self.closed = True


def _whole(frames):
    return ((f, WHOLE) for f in frames)


def _identity(items):
    for f, region, patch in batched_apply(items, 32, 3, lambda crops: crops):
        yield f, f.image, patch is not None


def test_the_threaded_pipeline_keeps_the_order_and_every_frame(tmp_path):
    out = tmp_path / "o.mp4"
    seen = []

    def prepare(frames):
        for f in frames:
            seen.append(threading.current_thread().name)
            yield f, WHOLE

    reader = _Reader(40)
    stats = stream_video(reader, out, _identity, prepare=lambda frames: with_crops(prepare(frames), 32), ahead=4)
    assert stats.frames == stats.processed == 40 and reader.closed
    assert set(seen) == {"copart-decode"}  # decoding and cropping ran ahead, in their own thread
    info = probe(out)
    assert info["frames"] == 40
    import av

    with av.open(str(out)) as c:
        means = [f.to_ndarray(format="rgb24").mean() for f in c.decode(video=0)]
    assert np.allclose(means, np.arange(40), atol=1.5)  # in order
    assert not [t for t in threading.enumerate() if t.name.startswith("copart-")]


def test_an_error_while_decoding_reaches_the_caller_and_leaves_nothing(tmp_path):
    reader = _Reader(40, fail=25)
    with pytest.raises(CopartError, match="frame 25 cannot be decoded"):
        stream_video(reader, tmp_path / "o.mp4", _identity, prepare=_whole)
    assert list(tmp_path.iterdir()) == [] and reader.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("copart-")]


def test_an_error_while_encoding_reaches_the_caller_and_leaves_nothing(tmp_path, monkeypatch):
    from copart.media import write

    real = write.VideoWriter._write
    calls = {"n": 0}

    def fail_later(self, image, pts):
        calls["n"] += 1
        if calls["n"] > 5:
            raise CopartError("the encoder gave up")
        return real(self, image, pts)

    monkeypatch.setattr(write.VideoWriter, "_write", fail_later)
    with pytest.raises(CopartError, match="the encoder gave up"):
        stream_video(_Reader(200), tmp_path / "o.mp4", _identity, prepare=_whole)
    assert list(tmp_path.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("copart-")]


def test_ctrl_c_in_the_model_stops_every_stage_and_leaves_nothing(tmp_path):
    def interrupted(items):
        for i, (f, image, processed) in enumerate(_identity(items)):
            if i == 10:
                raise KeyboardInterrupt
            yield f, image, processed

    reader = _Reader(10_000)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        stream_video(reader, tmp_path / "o.mp4", interrupted, prepare=_whole)
    assert time.perf_counter() - start < 30
    assert list(tmp_path.iterdir()) == [] and reader.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("copart-")]


def test_detecting_every_few_frames_still_tracks_every_frame():
    class Counting:
        def __init__(self, misses=()):
            self.calls, self.misses = 0, misses

        def detect(self, image):
            self.calls += 1
            return [] if self.calls in self.misses else [(20.0, 20.0, 60.0, 60.0, 1.0)]

    def run(detector, n=50, **kwargs):
        track = FaceTrack(detector, 0.3, **{"window": 8, "max_gap": 50, **kwargs})
        frames = (np.zeros((120, 160, 3), np.uint8) for _ in range(n))
        return [box for _, box in track.track(frames, image_of=lambda image: image)], track

    boxes, track = run(Counting(misses={6}), detect_every=5)
    assert len(boxes) == 50 and all(b is not None for b in boxes)
    assert all(abs(b.cx - 40) < 1e-6 and abs(b.cy - 40) < 1e-6 for b in boxes)
    # Frames 0, 1, 2 (a new face: looked at again until confirmed), then every 5th: 7, 12; the
    # miss at 17 has the frame skipped before it looked at (16: the face is there, so it was
    # not lost earlier) and is retried at 18, then 23, 28, ..., 48: 14 calls, not 50.
    assert track.detector_calls == track.detector.calls == 14 and track.detections == 13
    assert track.summary().describe() == "1 face found, followed: face 1 in 50 frames"
    # A face that leaves between two runs: the skipped frames are looked at, latest first, back
    # to the last one it is in (14), so its box ends where it would detecting every frame.
    class Leaving:
        def __init__(self):
            self.frames = []

        def detect(self, image):
            self.frames.append(int(image[0, 0, 0]))
            return [(20.0, 20.0, 60.0, 60.0, 1.0)] if image[0, 0, 0] < 15 else []

    track = FaceTrack(Leaving(), 0.3, window=8, max_gap=4, detect_every=5)
    frames = (np.full((120, 160, 3), i, np.uint8) for i in range(40))
    boxes = [box for _, box in track.track(frames, image_of=lambda image: image)]
    looked = track.detector.frames
    assert looked[:9] == [0, 1, 2, 7, 12, 17, 16, 15, 14], looked
    # Then on every frame while its box is carried: 9 misses (frame 23) are more than the window
    # (8) and max_gap (4), and the box ends there, as it does detecting every frame.
    assert looked[9:16] == [18, 19, 20, 21, 22, 23, 28], looked
    dense = FaceTrack(Leaving(), 0.3, window=8, max_gap=4)
    every = [box for _, box in dense.track((np.full((120, 160, 3), i, np.uint8) for i in range(40)),
                                           image_of=lambda image: image)]
    assert all(boxes[:23]) and not any(boxes[23:]) and [b is None for b in every] == [b is None for b in boxes]
    # Every frame with detect_every=1 (the default).
    _, every = run(Counting())
    assert every.detect_every == 1 and every.detector_calls == 50
    # A frame the detector skips is no miss: with a window of 2 frames and a gap of 3 misses,
    # the box is still carried across the 9 frames between detections.
    boxes, track = run(Counting(), window=2, max_gap=3, detect_every=10)
    assert all(b is not None for b in boxes) and track.detector_calls == 7  # 0, 1, 2, 12, 22, 32, 42
    assert faces.make_track("haar", "cpu", 0.3, 25, []).detect_every == 5
    assert faces.make_track("haar", "cpu", 0.3, 30, []).detect_every == 6
    assert faces.make_track("haar", "cpu", 0.3, 60, []).detect_every == 12
    assert faces.make_track("haar", "cpu", 0.3, 4, []).detect_every == 1


def _threads_while_streaming(tmp_path, clip, io_threads, monkeypatch):
    """The process's threads and OpenCV's thread count, seen from the model's side of a real
    decode -> encode stream of ``clip`` (640x480 and larger: FFmpeg and x264 thread by default)."""
    import os

    import cv2

    seen = {"tasks": 0, "cv2": set()}

    def outputs(items):
        for f, region, patch in batched_apply(items, 32, 1, lambda crops: crops):
            seen["tasks"] = max(seen["tasks"], len(os.listdir("/proc/self/task")))
            seen["cv2"].add(cv2.getNumThreads())
            yield f, f.image, True

    before = cv2.getNumThreads()
    seen["idle"] = len(os.listdir("/proc/self/task"))  # the threads of this process before the stream
    with MediaReader(clip, max_frames=12) as reader:
        stream_video(reader, tmp_path / f"o{io_threads}.mp4", outputs, prepare=lambda fr: with_crops(_whole(fr), 32),
                     io_threads=io_threads)
    assert cv2.getNumThreads() == before  # put back after the run
    return seen


def test_with_the_model_on_the_cpu_the_io_libraries_run_one_thread_each(tmp_path, monkeypatch, bigbuckbunny):
    """The network's threads keep the cores: FFmpeg's decoder, x264 and OpenCV run one thread each
    while the model computes on the CPU (the swap passes io_threads_for(device)); with the model
    elsewhere the libraries choose."""
    import os

    from copart.media import pipeline

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("no /proc/self/task")
    assert pipeline.io_threads_for("cpu") == 1
    assert pipeline.io_threads_for("cuda") is None and pipeline.io_threads_for("cuda:1") is None
    capped = _threads_while_streaming(tmp_path, bigbuckbunny, 1, monkeypatch)
    free = _threads_while_streaming(tmp_path, bigbuckbunny, None, monkeypatch)
    assert capped["cv2"] == {1}
    # the stream's own decoding and encoding threads, and at most one more for each of FFmpeg's
    # decoder and x264 (x264 keeps one helper at threads=1), not a pool per library
    assert capped["tasks"] <= capped["idle"] + 4 < free["tasks"], (capped, free)
    # the swap asks for it on the CPU
    import inspect

    import copart.editing.swap as job

    assert "io_threads=io_threads_for(device)" in inspect.getsource(job.swap)


def test_every_convolution_runs_in_bf16_under_the_default_autocast(fixture_checkpoint, astronaut, carphone):
    """bf16 end to end: every convolution of a swap (source preparation and frames) takes bf16
    activations and gives bf16 (no silent fp32 fallback), and none is handed an fp32 activation
    that autocast would have to convert between layers: the frames themselves alone come in as
    float32 (converted once, at the network's door). The fp32 islands (part-map softmax, anchors,
    sampling) hand bf16 back. CPU autocast runs bf16 everywhere, without bf16 hardware slowly."""
    model = load_model(fixture_checkpoint).model
    seen, inputs = [], []
    convs = {m: name for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}
    assert len(convs) > 20

    def check(module, args, output):
        seen.append((convs[module], args[0].dtype, output.dtype, any(args[0] is x for x in inputs)))

    for module in convs:
        module.register_forward_hook(check)
    real_to_tensor = inference.to_tensor

    def to_tensor(*args, **kwargs):
        batch = real_to_tensor(*args, **kwargs)
        inputs.append(batch)
        return batch

    source = read_image(astronaut)[:128, :128]
    with MediaReader(carphone, max_frames=2) as reader:
        crops = [f.image[:128, :128] for f in reader.frames()]
    try:
        inference.to_tensor = to_tensor
        for hard, source_mask in ((False, False), (True, True)):
            PartSwapper(model, source, [1, 2], "cpu", "bf16", hard, source_mask)(crops)
    finally:
        inference.to_tensor = real_to_tensor
    assert {name for name, *_ in seen} == set(convs.values())  # every convolution ran
    assert [s for s in seen if s[2] != torch.bfloat16] == []  # and gave bf16: no fp32 fallback
    # bf16 in, except where the input is the frame itself (float32 from to_tensor)
    assert [s for s in seen if s[1] != torch.bfloat16 and not s[3]] == []
    print("BF16: convolutions run", len(seen), "; fed the frame itself in float32:",
          sorted({s[0] for s in seen if s[1] != torch.bfloat16}))
