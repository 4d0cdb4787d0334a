"""``copart demo``: from nothing to videos that show what copart does, on a CPU.

Generates synthetic articulated-motion videos, trains a small model on them, names the
learned parts after the ground-truth part each overlaps most, segments a held-out video,
swaps a part of one figure onto another video, and scores the model against the ground
truth. Everything lands in one folder; running it again reuses what exists.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import av
import numpy as np
import torch
import typer

from models.checkpoint import checkpoint_dict, load_model, read_checkpoint, save_atomic
from models.errors import CopartError

from .synthetic import PART_NAMES, generate
from .video import MediaReader, probe, read_image, write_image

HELP = "Run the whole pipeline on synthetic data in a few CPU minutes: synthetic, train, segment, swap, eval."
EPILOG = "Example:\n\n  copart demo demo/\n\nCOPART_DEMO_QUICK=1 (or --quick) shrinks every step for a smoke test."
PRESET = "cpu-64-sem-5segments"


def _run(*args: str) -> None:
    """Run a copart command in this process; user errors propagate as CopartError."""
    from .app import app

    app(list(args), prog_name="copart", standalone_mode=False)


def name_parts(checkpoint: Path, data: Path, out: Path) -> dict[str, list[int]]:
    """Name each learned channel after the ground-truth part it overlaps most (on the
    training clips), and write a copart checkpoint with those names."""
    loaded = load_model(checkpoint)
    model, k = loaded.model, loaded.model.num_segments
    overlap = np.zeros((k + 1, len(PART_NAMES) + 1))
    for video in sorted((data / "train").glob("*.mp4"))[:4]:
        labels = np.load(data / "groundtruth" / f"{video.stem}.npz")["labels"]
        with MediaReader(video) as reader:
            frames = [f.image for f in reader.frames()]
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            seg = model.segment(batch).segmentation
        seg = torch.nn.functional.interpolate(seg, size=labels.shape[1:], mode="bilinear", align_corners=False)
        learned = seg.argmax(1).numpy()
        for c in range(k + 1):
            for g in range(len(PART_NAMES) + 1):
                overlap[c, g] += np.count_nonzero((learned == c) & (labels == g))
    names: dict[str, list[int]] = {}
    area: dict[str, float] = {}
    for c in range(1, k + 1):
        total = overlap[c].sum()
        # A learned part is named after the figure part it covers most, if it lies mostly on the figure.
        if total == 0 or overlap[c, 1:].sum() < 0.4 * total:
            continue
        name = PART_NAMES[int(overlap[c, 1:].argmax())].replace(" ", "-")
        names.setdefault(name, []).append(c)
        area[name] = area.get(name, 0.0) + total
    names = {n: names[n] for n in sorted(names, key=lambda n: -area[n])}  # largest first
    save_atomic(checkpoint_dict(model, loaded.config, names, step=loaded.step or 0), out)
    return names


def _frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frames[min(i, len(frames) - 1)] for i in indices]


def _strip(images: list[np.ndarray], height: int = 192) -> np.ndarray:
    import cv2

    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_NEAREST)
              for im in images]
    gap = np.full((height, 6, 3), 255, np.uint8)
    out = []
    for im in scaled:
        out += [im, gap]
    return np.concatenate(out[:-1], axis=1)


SETTINGS = "demo.json"


def _reuse_or_start_over(folder: Path, settings: dict) -> None:
    """Reuse the data and run in ``folder``; start them over only when a record shows the demo
    made them with other settings (then they are the demo's own to remove)."""
    record = folder / SETTINGS
    if record.exists():
        try:
            same = json.loads(record.read_text()) == settings
        except ValueError:
            same = False
        if not same:
            typer.echo(f"    {folder} holds a demo made with other settings: starting it over")
            for path in (folder / "data", folder / "run"):
                if path.exists():
                    shutil.rmtree(path)
    record.write_text(json.dumps(settings, indent=2))


def demo(
    folder: Path = typer.Argument(Path("demo"), help="Where everything goes (reused when run again)."),
    steps: int = typer.Option(800, "--steps", min=1, help="Training steps (about 7 CPU minutes for 800)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes for a smoke test (also COPART_DEMO_QUICK=1)."),
) -> None:
    quick = quick or os.environ.get("COPART_DEMO_QUICK", "") not in ("", "0")
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CopartError(f"{folder} exists and is not a folder.")
    if quick:  # a folder of its own: a smoke test never mixes with (or replaces) a full run
        folder = folder / "quick"
    folder.mkdir(parents=True, exist_ok=True)
    data, run, pictures = folder / "data", folder / "run", folder / "pictures"
    steps = 12 if quick else steps
    sizes = {"videos": 6, "frames": 24, "test": 2, "batch_size": 8} if quick else \
        {"videos": 12, "frames": 48, "test": 3, "batch_size": 16}
    _reuse_or_start_over(folder, {"preset": PRESET, "size": 64, **sizes})
    pictures.mkdir(exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name, action):
        start = time.perf_counter()
        action()
        timings[name] = round(time.perf_counter() - start, 1)

    typer.echo("1/5 synthetic videos")
    timed("synthetic", lambda: generate(data, videos=sizes["videos"], frames=sizes["frames"], size=64,
                                        test=sizes["test"]))

    typer.echo(f"2/5 training {PRESET} for {steps} steps on the CPU")
    latest = run / "checkpoint.pth"

    def training():
        if latest.exists():
            done = int(read_checkpoint(latest)["step"])
            if done >= steps:
                typer.echo(f"    reusing {latest} (step {done})")
                return
            _run("train", "--resume", str(run), "--steps", str(steps))
        else:
            _run("train", "--preset", PRESET, "--data", str(data), "--out", str(run), "--steps", str(steps),
                 "--batch-size", str(sizes["batch_size"]), "--checkpoint-every", str(max(1, steps // 4)),
                 "--vis-every", str(max(1, steps // 4)), "--workers", "1", "--force")

    timed("train", training)
    named = folder / "model.pth"
    names = name_parts(latest, data, named)

    tests = sorted((data / "test").glob("*.mp4"))
    held_out, other = tests[0], tests[-1]
    typer.echo(f"3/5 segmenting {held_out.name}")
    seg_video = folder / f"{held_out.stem}.parts.mp4"
    timed("segment", lambda: _run(
        "segment", str(held_out), "--checkpoint", str(named), "--no-crop", "--style", "overlay", "--hard",
        "-o", str(seg_video), "--masks", str(folder / "masks.npz"), "--force"))

    part = next(iter(names), "1")  # the learned part covering most of the figure
    typer.echo(f"4/5 swapping the {part} of {held_out.stem} onto {other.stem}")
    swap_video = folder / f"{other.stem}.swap.mp4"
    timed("swap", lambda: _run(
        "swap", "--checkpoint", str(named), "--parts", part, "--no-crop", str(other), str(held_out),
        "--source-frame", "0", "-o", str(swap_video), "--force"))

    typer.echo("5/5 evaluating against the ground truth")
    eval_json = folder / "eval.json"

    def evaluating():
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            _run("eval", str(data / "eval"), "--checkpoint", str(named), "--metric", "all", "--json",
                 "--plot", str(pictures / "eval.png"))
        text = captured.getvalue()
        eval_json.write_text(text[text.index("{"):])

    timed("eval", evaluating)
    scores = json.loads(eval_json.read_text())

    # Pictures made from the outputs, for people (and the README).
    frames = probe(seg_video)["frames"]
    write_image(_strip(_frames(seg_video, [0, frames // 2, frames - 1])), pictures / "segment.png")
    write_image(read_image(seg_video.with_name(f"{held_out.stem}.legend.png")), pictures / "legend.png")
    source = _frames(held_out, [0])[0]
    target, result = _frames(other, [frames // 2])[0], _frames(swap_video, [frames // 2])[0]
    write_image(_strip([source, target, result]), pictures / "swap.png")
    vis = sorted((run / "train-vis").glob("*.png"))
    if vis:
        write_image(read_image(vis[-1]), pictures / "train-vis.png")

    summary = {
        "folder": str(folder),
        "model": str(named),
        "part_names": names,
        "segmentation": str(seg_video),
        "swap": str(swap_video),
        "swapped_part": part,
        "metrics": {"iou": scores["iou"]["iou_mean"], "mae_sum": scores["mae"]["sum"], "mae_mean": scores["mae"]["mean"]},
        "pictures": sorted(str(p) for p in pictures.glob("*.png")),
        "seconds": timings,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(
        f"Done in {sum(timings.values()):.0f} s: parts {', '.join(f'{n}={c}' for n, c in names.items()) or 'unnamed'}; "
        f"IoU {summary['metrics']['iou']:.3f}, landmark MAE {summary['metrics']['mae_mean']:.2f} px per coordinate; "
        f"videos {seg_video.name}, {swap_video.name}; summary {folder / 'summary.json'}"
    )

