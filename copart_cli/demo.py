"""``copart demo``: from nothing to videos that show what copart does, on a CPU.

Generates synthetic articulated-motion videos, trains a small model on them, names the
learned parts after the ground-truth part each overlaps most, segments a held-out video,
swaps a part of one figure onto another video, and scores the model against the ground
truth. Everything lands in one folder; running it again reuses what exists.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Optional

import av
import numpy as np
import torch

from copart.editing.segment import segment
from copart.editing.swap import swap
from copart.evaluation.evaluate import evaluate
from copart.loading import ModelChoice, pick_device
from copart.media.pipeline import Progress
from copart.media.read import MediaReader, probe, read_image
from copart.media.write import unwritable, write_atomic_text, write_image
from copart.models.checkpoint import (
    checkpoint_dict,
    load_model,
    read_checkpoint,
    save_atomic,
)
from copart.models.errors import CopartError
from copart.models.files import check_creatable
from copart.training import loop
from copart.training.synthetic import PART_NAMES, generate

PRESET = "cpu-64-sem-5segments"


@dataclass
class Reporter:
    """How the demo shows what it does: a line per step, and the bars of the jobs it runs."""

    say: Callable[[str], None] = print
    notice: Callable[[str], None] = lambda text: None
    warn: Callable[[str], None] = lambda text: None
    # a context manager giving a ``progress(done, total)`` callable for a job (name, unit)
    progress: Callable[[str, str], ContextManager[Optional[Progress]]] = lambda name, unit: contextlib.nullcontext()
    # a context manager giving the training ``on_step(step, total, losses, rate)`` callable
    training: Callable[[], ContextManager[Optional[Callable]]] = lambda: contextlib.nullcontext()


def part_overlap(model, data: Path, clips: int = 4) -> np.ndarray:
    """Pixel counts ``overlap[c, g]``: how often learned channel ``c`` (0 = background) is the
    most likely one where the true part is ``g`` (0 = background, then PART_NAMES), on the first
    ``clips`` training clips."""
    k = model.num_segments
    overlap = np.zeros((k + 1, len(PART_NAMES) + 1))
    for video in sorted((data / "train").glob("*.mp4"))[:clips]:
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
    return overlap


# A learned channel is named after a true part where it lies mostly on the figure (at least
# ON_FIGURE of its pixels) and most of what it covers of the figure is that one part (NAMED_SHARE).
ON_FIGURE, NAMED_SHARE = 0.4, 0.6


def names_from_overlap(overlap: np.ndarray) -> dict[str, list[int]]:
    """Name each learned channel after the true part it sits on: the part that holds at least
    NAMED_SHARE of the channel's pixels on the figure (a channel over the neck, half head and
    half torso, is named neither). Names are listed largest first; unnamed channels keep numbers."""
    names: dict[str, list[int]] = {}
    area: dict[str, float] = {}
    for c in range(1, overlap.shape[0]):
        total, figure = overlap[c].sum(), overlap[c, 1:].sum()
        if total == 0 or figure < ON_FIGURE * total:
            continue
        g = int(overlap[c, 1:].argmax()) + 1
        if overlap[c, g] < NAMED_SHARE * figure:
            continue
        name = PART_NAMES[g - 1].replace(" ", "-")
        names.setdefault(name, []).append(c)
        area[name] = area.get(name, 0.0) + total
    return {n: names[n] for n in sorted(names, key=lambda n: -area[n])}


def part_to_swap(overlap: np.ndarray, names: dict[str, list[int]], largest: float = 0.5) -> tuple[str, float]:
    """The named part the run learned best, to show in the swap: the one whose channels together
    have the highest IoU with their true part, among the parts that are not most of the figure
    (under ``largest`` of its pixels). Returns its name and that IoU (name "1", IoU 0 when no part
    is named)."""
    figure = overlap[:, 1:].sum()
    best, best_iou = None, -1.0
    for name, channels in names.items():
        g = PART_NAMES.index(name.replace("-", " ")) + 1
        inside = overlap[channels, g].sum()
        learned, true = overlap[channels].sum(), overlap[:, g].sum()
        iou = inside / max(learned + true - inside, 1.0)
        if overlap[channels, 1:].sum() < largest * figure and iou > best_iou:
            best, best_iou = name, float(iou)
    return (best, round(best_iou, 3)) if best is not None else ("1", 0.0)


def name_parts(checkpoint: Path, data: Path, out: Path) -> tuple[dict[str, list[int]], np.ndarray]:
    """Name each learned channel after the true part it sits on (on the training clips), and
    write a copart checkpoint with those names. Returns the names and the overlap counts."""
    loaded = load_model(checkpoint)
    overlap = part_overlap(loaded.model, data)
    names = names_from_overlap(overlap)
    save_atomic(checkpoint_dict(loaded.model, loaded.config, names, step=loaded.step or 0), out)
    return names, overlap


def _frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frames[min(i, len(frames) - 1)] for i in indices]


def _strip(images: list[np.ndarray], height: int = 192, titles: Optional[list[str]] = None,
           caption: str = "") -> np.ndarray:
    """Pictures side by side at ``height``, each under its title, with a caption below (wrapped)."""
    import cv2

    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_NEAREST)
              for im in images]
    gap = np.full((height, 6, 3), 255, np.uint8)
    out = []
    for im in scaled:
        out += [im, gap]
    row = np.concatenate(out[:-1], axis=1)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    if titles:
        band = np.full((26, row.shape[1], 3), 255, np.uint8)
        x = 0
        for im, title in zip(scaled, titles):
            (w, _), _ = cv2.getTextSize(title, font, scale, 1)
            cv2.putText(band, title, (x + max(2, (im.shape[1] - w) // 2), 18), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
            x += im.shape[1] + gap.shape[1]
        row = np.concatenate([band, row], axis=0)
    if caption:
        lines, line = [], ""
        for word in caption.split():
            trial = f"{line} {word}".strip()
            if cv2.getTextSize(trial, font, 0.45, 1)[0][0] > row.shape[1] - 8 and line:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
        band = np.full((8 + 20 * len(lines), row.shape[1], 3), 255, np.uint8)
        for i, text in enumerate(lines):
            cv2.putText(band, text, (4, 18 + 20 * i), font, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
        row = np.concatenate([row, band], axis=0)
    return row


def held_out_parts(model, data: Path) -> dict:
    """Part-level scores of the model on the held-out clips (channels named on the training ones)."""
    from copart.evaluation import metrics

    model = model.eval()

    def maps_and_labels(split: str, limit: int):
        maps, labels = [], []
        for video in sorted((data / split).glob("*.mp4"))[:limit]:
            labels.append(np.load(data / "groundtruth" / f"{video.stem}.npz")["labels"])
            with MediaReader(video) as reader:
                batch = np.stack([f.image for f in reader.frames()])
            with torch.no_grad():
                maps.append(model.segment(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255).segmentation)
        return torch.cat(maps), np.concatenate(labels)

    return metrics.part_scores(*maps_and_labels("train", 4), *maps_and_labels("test", 100))


def swap_change(model, target: Path, swapped: Path, channels: list[int], outside: float = 0.02,
                crf: int = 18, batch: int = 8) -> dict:
    """How much a swap changed each frame, in levels (0-255), inside and outside the chosen parts:
    the mask is the target's own soft part maps of those channels, upsampled to the frame;
    "outside" is where it is below ``outside``. Both videos are decoded as written (so the
    codec's own changes count too), and against a plain re-encode of the target at the same
    ``crf`` and with the target's own timing (what the swap changes beyond the codec). The videos
    are streamed ``batch`` frames at a time; the statistics come from histograms of the levels."""
    import tempfile

    from copart.media.write import VideoWriter

    model = model.eval()
    counts = {key: np.zeros(256, np.int64) for key in ("outside", "inside", "codec")}
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.mp4"  # a plain re-encode of the target at the swap's settings
        with MediaReader(target, "Target") as reader:
            writer = None
            for frame in reader.frames():
                if writer is None:
                    writer = VideoWriter(plain, frame.image.shape[1], frame.image.shape[0], reader.fps,
                                         frame.time_base, crf=crf)
                writer.write(frame.image, frame.pts)
            if writer is None:
                raise CopartError(f"Target {target} has no frames.")
            writer.close()
        with MediaReader(target, "Target") as a, MediaReader(swapped, "Swap") as b, \
                MediaReader(plain, "Re-encode") as c:
            frames = zip(a.frames(), b.frames(), c.frames())
            while chunk := list(itertools.islice(frames, batch)):
                before = np.stack([x.image for x, _, _ in chunk])
                h, w = before.shape[1:3]
                after = np.stack([y.image[:h, :w] for _, y, _ in chunk]).astype(np.int16)
                reencoded = np.stack([z.image[:h, :w] for _, _, z in chunk]).astype(np.int16)
                with torch.no_grad():
                    seg = model.segment(torch.from_numpy(before).permute(0, 3, 1, 2).float() / 255).segmentation
                mask = torch.nn.functional.interpolate(seg[:, channels].sum(1, keepdim=True), size=(h, w),
                                                       mode="bilinear", align_corners=False)[:, 0].numpy()
                change = np.abs(after - before.astype(np.int16)).max(axis=-1)
                codec = np.abs(after - reencoded).max(axis=-1)
                for key, levels in (("outside", change[mask < outside]), ("inside", change[mask >= 0.5]),
                                    ("codec", codec[mask < outside])):
                    counts[key] += np.bincount(levels.ravel(), minlength=256)
                total += change.size
    out, inside, codec = counts["outside"], counts["inside"], counts["codec"]
    return {"outside_mean": _mean(out, 2), "outside_p99": _percentile(out, 99, 1),
            "outside_vs_reencode_mean": _mean(codec, 2), "outside_vs_reencode_p99": _percentile(codec, 99, 1),
            "inside_mean": _mean(inside, 2), "outside_share": round(float(out.sum() / total), 3)}


def _mean(counts: np.ndarray, digits: int) -> Optional[float]:
    """The mean of levels given as a histogram (``counts[v]``: how many are ``v``), or None if none."""
    n = counts.sum()
    return round(float((counts * np.arange(len(counts))).sum() / n), digits) if n else None


def _percentile(counts: np.ndarray, q: float, digits: int) -> Optional[float]:
    """``np.percentile`` (linear interpolation) of levels given as a histogram, or None if none."""
    n = counts.sum()
    if not n:
        return None
    position = q / 100 * (n - 1)
    low = int(np.floor(position))
    cumulative = np.cumsum(counts)
    below, above = (int(np.searchsorted(cumulative, i, side="right")) for i in (low, min(low + 1, n - 1)))
    return round(float(below + (above - below) * (position - low)), digits)


SETTINGS = "demo.json"


def _reuse_or_start_over(folder: Path, settings: dict, say: Callable[[str], None] = print) -> None:
    """Reuse the data and run in ``folder`` when the demo's record shows it made them with these
    settings; start them over when it made them with others (they are its own to remove). A
    ``data/`` or ``run/`` the demo did not record making is refused, never adopted."""
    record = folder / SETTINGS
    made = [p for p in (folder / "data", folder / "run") if p.exists()]
    if record.exists():
        try:
            same = json.loads(record.read_text()) == settings
        except ValueError:
            same = False
        if not same:
            say(f"    {folder} holds a demo made with other settings: starting it over")
            for path in made:
                shutil.rmtree(path)
    elif made:
        raise CopartError(f"{folder} already holds {' and '.join(p.name + '/' for p in made)} that copart demo did "
                          f"not make; give the demo a new folder.")
    write_atomic_text(record, json.dumps(settings, indent=2))


def run(folder: Path, steps: int = 800, quick: bool = False, report: Reporter = Reporter(), seed: int = 0) -> dict:
    """The whole demo in ``folder``; returns its summary (also written to ``summary.json``)."""
    say = report.say
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise CopartError(f"{folder} exists and is not a folder.")
    if quick:  # a folder of its own: a smoke test never mixes with (or replaces) a full run
        folder = folder / "quick"
    check_creatable(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(folder, exc) from None
    data, run_dir, pictures = folder / "data", folder / "run", folder / "pictures"
    steps = 12 if quick else steps
    sizes = {"videos": 6, "frames": 24, "test": 2, "batch_size": 8} if quick else \
        {"videos": 12, "frames": 48, "test": 3, "batch_size": 16}
    _reuse_or_start_over(folder, {"preset": PRESET, "size": 64, **sizes, **({"seed": seed} if seed else {})}, say)
    timings: dict[str, float] = {}

    def timed(name, action):
        start = time.perf_counter()
        action()
        timings[name] = round(time.perf_counter() - start, 1)

    say("1/5 synthetic videos")
    timed("synthetic", lambda: generate(data, videos=sizes["videos"], frames=sizes["frames"], size=64,
                                        test=sizes["test"]))

    say(f"2/5 training {PRESET} for {steps} steps on the CPU")
    latest = run_dir / "checkpoint.pth"

    def training():
        device = pick_device("auto")
        if latest.exists():
            done = int(read_checkpoint(latest)["step"])
            if done >= steps:
                say(f"    reusing {latest} (step {done})")
                return
            config, label, settings, resume = {}, str(run_dir), loop.TrainSettings(data="", steps=0, batch_size=1), True
        else:
            config, label = loop.new_run_config(PRESET, data)
            every = max(1, steps // 4)
            settings = loop.TrainSettings(data=str(data.resolve()), steps=steps, batch_size=sizes["batch_size"],
                                          checkpoint_every=every, vis_every=every, workers=1, seed=seed)
            resume = False
        with report.training() as on_step:
            loop.train(config, run_dir, settings, None, resume, device, label, on_step, report.warn,
                       {"steps": steps} if resume else None, force=True)

    timed("train", training)
    named = folder / "model.pth"
    names, overlap = name_parts(latest, data, named)
    model = ModelChoice(checkpoint=named)

    tests = sorted((data / "test").glob("*.mp4"))
    held_out, other = tests[0], tests[-1]
    say(f"3/5 segmenting {held_out.name}")
    seg_video = folder / f"{held_out.stem}.parts.mp4"

    def segmenting():
        with report.progress("segment", "frames") as progress:
            segment(held_out, model, style="overlay", hard=True, output=seg_video, masks=folder / "masks.npz",
                    force=True, no_crop=True, progress=progress, notice=report.notice)

    timed("segment", segmenting)

    # The part the run learned best (which one varies from run to run), so that the swap shows a real part.
    part, part_iou = part_to_swap(overlap, names)
    say(f"4/5 swapping the {part} of {held_out.stem} onto {other.stem} (the part this run learned best: "
        f"IoU {part_iou:.2f} with the true {part.replace('-', ' ')})" if part in names else
        f"4/5 swapping part {part} of {held_out.stem} onto {other.stem} (no part of this run sits on one true part)")
    swap_video = folder / f"{other.stem}.swap.mp4"

    def swapping():
        with report.progress("swap", "frames") as progress:
            swap(other, held_out, [part], model, output=swap_video, force=True, no_crop=True, keep_outside=True,
                 progress=progress, notice=report.notice)

    timed("swap", swapping)

    say("5/5 evaluating against the ground truth")
    scores: dict = {}

    def evaluating():
        pictures.mkdir(exist_ok=True)  # made when there is something to put in it
        with report.progress("eval", "images") as progress:
            scores.update(evaluate(data / "eval", model, metric="all", plot_path=pictures / "eval.png",
                                   progress=progress))
        write_atomic_text(folder / "eval.json", json.dumps(scores, indent=2))

    timed("eval", evaluating)

    # How the parts cover the held-out figures, and what the swap changed.
    trained = load_model(named).model
    parts = held_out_parts(trained, data)
    channels = names.get(part) or [int(part)]
    change = swap_change(trained, other, swap_video, channels)
    label = part if part in names else f"part {part}"

    # Pictures made from the outputs, for people (and the README), each titled and captioned.
    frames = probe(seg_video)["frames"]
    k = trained.num_segments
    named_list = ", ".join(f"{n} = {c}" for n, c in names.items())
    write_image(_strip(_frames(seg_video, [0, frames // 2, frames - 1]),
                       titles=[f"frame {i + 1}" for i in (0, frames // 2, frames - 1)],
                       caption=f"copart segment --style overlay --hard on held-out {held_out.name}: the most likely "
                               f"of K = {k} parts at each pixel; named after the true part each sits on "
                               f"({named_list or 'none named'}). Part NMI {parts['part_nmi']:.2f}, largest part "
                               f"{100 * parts['largest_part']:.0f} % of the figures."),
                pictures / "segment.png")
    from copart.media import render

    notes = {c: f"{100 * share:.0f} % of the figure" for c, share in enumerate(parts["coverage"], start=1)}
    write_image(render.legend(render.palette(k), names, f"K = {k}: share of the held-out figures' pixels", notes),
                pictures / "legend.png")
    source = _frames(held_out, [0])[0]
    target, result = _frames(other, [frames // 2])[0], _frames(swap_video, [frames // 2])[0]
    write_image(_strip([source, target, result, render.change_picture(target, result, gain=4)],
                       titles=["source", "target", f"{label} swapped", "change x4"],
                       caption=f"copart swap --parts {part} --keep-outside: the target takes the source's {label} "
                               f"(channels {channels}) in its own pose; the demo swaps the part this run learned "
                               f"best (IoU {part_iou:.2f} with the true one), which varies from run to run. " + (
                                   f"Outside that part's mask pixels differ from a plain re-encode of the target by "
                                   f"{change['outside_vs_reencode_mean']} levels on average (99th percentile "
                                   f"{change['outside_vs_reencode_p99']}); from the target as decoded by "
                                   f"{change['outside_mean']} (the codec's own change included); inside the mask by "
                                   f"{change['inside_mean']}." if change["outside_mean"] is not None else
                                   "The part's mask covers every pixel.")),
                pictures / "swap.png")
    vis = sorted((run_dir / "train-vis").glob("*.png"))
    if vis:
        picture = read_image(vis[-1])
        columns = ["source", "target", "warped", "result", "parts", "visibility"]
        width = picture.shape[1] // len(columns)
        write_image(_strip([picture[:, i * width:(i + 1) * width] for i in range(len(columns))], picture.shape[0],
                           titles=columns, caption=f"Training picture at step {steps}: source, target, source warped "
                                                   f"by the part motions, reconstruction, target parts, visibility."),
                    pictures / "train-vis.png")

    summary = {
        "folder": str(folder),
        "model": str(named),
        "part_names": names,
        "segmentation": str(seg_video),
        "swap": str(swap_video),
        "swapped_part": part,
        "swapped_part_iou": part_iou,
        "metrics": {"iou": scores["iou"]["iou_mean"], "mae_sum": scores["mae"]["sum"], "mae_mean": scores["mae"]["mean"],
                    "part_nmi": parts["part_nmi"], "part_miou": parts["part_miou"],
                    "largest_part": parts["largest_part"], "coverage": parts["coverage"]},
        "swap_change": change,
        "pictures": sorted(str(p) for p in pictures.glob("*.png")),
        "seconds": timings,
    }
    write_atomic_text(folder / "summary.json", json.dumps(summary, indent=2))
    return summary

