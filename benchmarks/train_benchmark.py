"""Does training learn parts? Train recipes on synthetic articulated-motion videos, then score.

    python benchmarks/train_benchmark.py [--recipe paper --recipe copart] [--minutes 20 | --steps N]
                                         [--kinds five limbs10 ...] [--seeds 0 1] [--threads 2]
                                         [--out bench-train]

For each kind of figure (`copart.training.figures.KINDS`, default all), generates copart's
synthetic videos of that kind (64 px articulated figures with exact part labels and landmarks; 24
training clips, 4 held out), trains each recipe on the `cpu-64-sem-10segments` architecture with
the pixel-pyramid loss on the CPU, for a time budget or a number of steps, once per seed, and scores
on the held-out clips. The kinds:

- `five`: five thick parts (copart's original clips); `limbs10`: ten thin limbs (upper and lower
  arms, thighs, shins, head, torso); `textured`: the ten thin limbs with busy textures in new
  colours per video over a busy background -- these three are the TUNING kinds;
- `small` (the five-part figure at half size), `camera` (thin limbs over a panning background) and
  `pair` (two figures) are HELD OUT of tuning: decided before any recipe was tuned, they are scored
  in their own rows and never used to choose a recipe or a weight.

The summary gives, per recipe, the mean and the worst kind of the tuning kinds, and the same of
the held-out kinds, beside each kind's own rows. The scores:

- part NMI: normalised mutual information between the most likely part and the true part, over
  the figures' pixels (1: the parts are the true parts up to names; 0: unrelated);
- part mIoU: each channel takes the true part it overlaps most on the training clips' frames;
  mean IoU of the true parts on the held-out frames;
- largest part: the share of the figures that the most common part covers (1: one blob);
- foreground IoU and landmark-regression MAE (the paper's metrics; regression fitted on the
  training clips' frames), minutes and steps.

Recipes (one row each): `paper` is the paper's training on this architecture; `copart` is what the
preset ships (its defaults); the others change one lever from `paper`. `--set key.path=value`
changes any configuration key of every recipe run (e.g. `--set train_params.loss_weights.concentration=5`).
An appearance-only baseline (k-means on colour and position, per image) and the untrained model
are scored too. Prints a markdown table (README-ready) and JSON, with the CPU's name.

`split-N` recipes use `train_params.concentration: foreground-split` (models/losses.py);
`split-10-after-100` adds `train_params.concentration_start: 100` and is, key for key, what the
cpu-64 presets ship (`copart`). docs/parts.md has the per-kind table of the presets' recipe
against the paper's (300 steps of batch 8, seeds 0 and 1) and the levers tried before it:
`--recipe paper --recipe copart --set train_params.batch_size=8 --steps 300 --threads 1`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from copart import presets
from copart.evaluation import metrics
from copart.media.read import MediaReader
from copart.models import CoPartModel, ModelConfig
from copart.models.checkpoint import load_model, read_checkpoint
from copart.training.loop import TrainSettings, train
from copart.training.figures import HELD_OUT_KINDS, KINDS
from copart.training.synthetic import generate

sys.path.insert(0, str(Path(__file__).parent))
from swap_benchmark import cpu_name  # noqa: E402

PRESET = "cpu-64-sem-10segments"
SEG = "model_params.segmentation_module_params"
# The paper's recipe on this architecture: every copart lever off.
PAPER = {f"{SEG}.part_temperature": 1.0, f"{SEG}.region_estimate": "regressed",
         "train_params.loss_weights.concentration": 0, "train_params.warmup_steps": 0,
         "dataset_params.min_frame_distance": 0, "train_params.loss_weights.equivariance": 10,
         "train_params.lr_segmentation": 2.0e-4, "train_params.lr_reconstruction": 2.0e-4,
         "train_params.batch_size": 16, "train_params.concentration": "mass-weighted",
         "train_params.concentration_start": 0}
# One lever each, on top of the paper's recipe.
RECIPES = {
    "paper": {},
    "copart": None,  # the preset as shipped
    "moments": {f"{SEG}.region_estimate": "moments"},
    "part-temperature-0.5": {f"{SEG}.part_temperature": 0.5},
    "equivariance-1": {"train_params.loss_weights.equivariance": 1},
    "warmup-lr-5e-4": {"train_params.warmup_steps": 200, "train_params.lr_segmentation": 5.0e-4,
                       "train_params.lr_reconstruction": 5.0e-4},
    "pairs-12-apart": {"dataset_params.min_frame_distance": 12},
    "concentration-1": {"train_params.loss_weights.concentration": 1},
    "concentration-5": {"train_params.loss_weights.concentration": 5},
    "concentration-10": {"train_params.loss_weights.concentration": 10},  # the cpu-64 presets' recipe before issue 21
    "batch-8": {"train_params.batch_size": 8},
    # The foreground-split concentration term (models/losses.py: foreground_split_loss).
    "split-1": {"train_params.loss_weights.concentration": 1, "train_params.concentration": "foreground-split"},
    "split-10": {"train_params.loss_weights.concentration": 10, "train_params.concentration": "foreground-split"},
    "split-10-after-100": {"train_params.loss_weights.concentration": 10, "train_params.concentration": "foreground-split",
                           "train_params.concentration_start": 100},
    "split-30": {"train_params.loss_weights.concentration": 30, "train_params.concentration": "foreground-split"},
}


def set_key(config: dict, dotted: str, value) -> None:
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def recipe_config(name: str, extra: dict) -> dict:
    config = copy.deepcopy(presets.load(PRESET))
    if RECIPES[name] is not None:
        for key, value in {**PAPER, **RECIPES[name]}.items():
            set_key(config, key, value)
    for key, value in extra.items():
        set_key(config, key, value)
    return config


def frames_and_truth(data: Path, split: str, every: int):
    images, landmarks, masks, labels = [], [], [], []
    for video in sorted((data / split).glob("*.mp4")):
        truth = np.load(data / "groundtruth" / f"{video.stem}.npz")
        with MediaReader(video) as reader:
            for frame in reader.frames():
                if frame.index % every == 0:
                    images.append(frame.image)
                    landmarks.append(truth["landmarks"][frame.index])
                    masks.append(truth["foreground"][frame.index])
                    labels.append(truth["labels"][frame.index])
    return np.stack(images), np.stack(landmarks), np.stack(masks), np.stack(labels)


def segment(model: CoPartModel, images: np.ndarray) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            batch = torch.from_numpy(images[i : i + 64]).permute(0, 3, 1, 2).float() / 255
            out.append(model.segment(batch).segmentation)
    return torch.cat(out)


def score(fit_maps, test_maps, fit, test) -> dict:
    size = test["images"].shape[1:3]
    fit_c, test_c = metrics.part_centres(fit_maps, size), metrics.part_centres(test_maps, size)
    regression = metrics.landmark_regression(fit_c, fit["landmarks"], test_c, test["landmarks"])
    overlap = metrics.iou(metrics.foreground(test_maps, size), test["masks"])
    parts = metrics.part_scores(fit_maps, fit["labels"], test_maps, test["labels"])
    return {"part_nmi": round(parts["part_nmi"], 3), "part_miou": round(parts["part_miou"], 3),
            "largest_part": round(parts["largest_part"], 3), "parts_used": parts["parts_used"],
            "coverage": parts["coverage"], "iou": round(overlap["iou_mean"], 3),
            "mae_sum": round(regression["mae_sum"], 3), "mae_mean": round(regression["mae_mean"], 3)}


def parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def summary(rows: list[dict], keys=("part_nmi", "iou", "largest_part")) -> list[dict]:
    """Per recipe and per group of kinds (tuning, held out): the mean over that group's rows and
    the worst kind (the kind whose mean over seeds is worst: lowest part NMI, lowest fg IoU,
    largest largest part)."""
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for held_out in (False, True):
            group = [r for r in rows if r["recipe"] == recipe and r.get("held_out", False) == held_out]
            if not group:
                continue
            per_kind = {}
            for r in group:
                per_kind.setdefault(r["kind"], []).append(r)
            line = {"recipe": recipe, "kinds": "held out" if held_out else "tuning", "runs": len(group)}
            for key in keys:
                means = {k: float(np.mean([r[key] for r in v])) for k, v in per_kind.items()}
                worst = max(means, key=means.get) if key == "largest_part" else min(means, key=means.get)
                line[f"{key}_mean"] = round(float(np.mean([r[key] for r in group])), 3)
                line[f"{key}_worst"] = round(means[worst], 3)
                line[f"{key}_worst_kind"] = worst
            out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", choices=list(RECIPES), help="Recipe(s) to train (default: paper, copart).")
    parser.add_argument("--minutes", type=float, default=None, help="Training time per run (default 20 unless --steps).")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per run instead of a time budget.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS),
                        help="Kinds of figure to train and score on (default: all; held out of tuning: "
                             + ", ".join(HELD_OUT_KINDS) + ").")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-train"))
    parser.add_argument("--set", action="append", dest="sets", metavar="KEY=VALUE", help="Change a configuration key.")
    parser.add_argument("--tag", default="", help="Suffix of the run folders (for --set experiments).")
    parser.add_argument("--baselines", action="store_true", help="Also score k-means and the untrained model.")
    parser.add_argument("--score", type=Path, action="append", metavar="RUN",
                        help="Score a run trained elsewhere (e.g. by copart train on OUT/data) as a row.")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    minutes = opts.minutes if opts.minutes is not None or opts.steps is not None else 20.0
    extra = parse_sets(opts.sets)
    rows = []
    sets = {}
    for kind in opts.kinds:
        data = opts.out / "data" if kind == "five" else opts.out / f"data-{kind}"
        generate(data, videos=28, frames=48, size=64, test=4, kind=kind)
        fit = dict(zip(("images", "landmarks", "masks", "labels"), frames_and_truth(data, "train", every=4)))
        test = dict(zip(("images", "landmarks", "masks", "labels"), frames_and_truth(data, "test", every=1)))
        sets[kind] = (data, fit, test)
        tags = {"kind": kind, "held_out": kind in HELD_OUT_KINDS}
        for name in opts.recipe or ["paper", "copart"]:
            for seed in opts.seeds:
                budget = f"{minutes:g}min" if minutes else f"{opts.steps}steps"
                prefix = "" if kind == "five" else f"{kind}-"
                run = opts.out / f"{prefix}{name}{opts.tag}-{budget}-seed{seed}"
                config = recipe_config(name, extra)
                if not (run / "result.json").exists():
                    started = time.perf_counter()
                    report = train(config, run, TrainSettings(
                        data=str(data), steps=opts.steps, batch_size=int(config["train_params"]["batch_size"]),
                        seed=seed, workers=1, checkpoint_every=10**6, checkpoint_minutes=0, vis_every=0,
                        loss="pixel", minutes=minutes), label=name, force=True,
                        on_step=lambda s, t, l, r: print(f"{kind} {name} seed {seed} step {s}/{t} loss {l['total']:.3f} "
                                                         f"{r:.1f} pairs/s", flush=True) if s % 100 == 0 else None)
                    seconds = time.perf_counter() - started
                    model = load_model(run / "checkpoint.pth").model
                    result = {"recipe": name, "seed": seed, "steps": report.step, "minutes": round(seconds / 60, 2),
                              "pairs_per_s": round(report.pairs_per_second, 2), "sets": extra,
                              **score(segment(model, fit["images"]), segment(model, test["images"]), fit, test)}
                    (run / "result.json").write_text(json.dumps(result, indent=1))
                rows.append({**json.loads((run / "result.json").read_text()), **tags})
                print(json.dumps(rows[-1]), flush=True)
    data, fit, test = sets[opts.kinds[0]]
    for run in opts.score or []:  # scored on the first kind's clips
        stored = load_model(run / "checkpoint.pth")
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        rows.append({"recipe": f"copart train ({run.name})", "seed": "-", "steps": stored.step,
                     "kind": opts.kinds[0], "held_out": opts.kinds[0] in HELD_OUT_KINDS,
                     "minutes": round(stored.step * read_checkpoint(run / "checkpoint.pth")["train"]["batch_size"]
                                      / max(log[-1]["pairs_per_s"], 1e-9) / 60, 2),
                     "pairs_per_s": log[-1]["pairs_per_s"],
                     **score(segment(stored.model, fit["images"]), segment(stored.model, test["images"]), fit, test)})
        print(json.dumps(rows[-1]), flush=True)
    baselines = {}
    if opts.baselines:
        config = presets.load(PRESET)
        for kind, (_, fit, test) in sets.items():
            torch.manual_seed(0)
            untrained = CoPartModel(ModelConfig.from_dict(config))
            baselines[f"untrained ({kind})"] = score(segment(untrained, fit["images"]), segment(untrained, test["images"]),
                                                     fit, test)
            k = untrained.num_segments
            kmeans = lambda images: torch.from_numpy(np.stack([metrics.kmeans_parts(im, k) for im in images]))
            baselines[f"k-means ({kind})"] = score(kmeans(fit["images"]), kmeans(test["images"]), fit, test)
    print(f"\nCPU: {cpu_name()}, {opts.threads} threads; held-out clips: 4 per kind; kinds kept out of tuning: "
          f"{', '.join(k for k in opts.kinds if k in HELD_OUT_KINDS) or 'none run'}\n")
    print("| kind | recipe | seed | part NMI | part mIoU | largest part | parts used | fg IoU | MAE (px, sum) | minutes | steps |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["held_out"], opts.kinds.index(r["kind"]))):
        kind = f"{r['kind']} (held out)" if r["held_out"] else r["kind"]
        print(f"| {kind} | {r['recipe']} | {r['seed']} | {r['part_nmi']:.3f} | {r['part_miou']:.3f} | "
              f"{r['largest_part']:.2f} | {r['parts_used']} | {r['iou']:.3f} | {r['mae_sum']:.2f} | {r['minutes']:.1f} | "
              f"{r['steps']} |")
    for name, r in baselines.items():
        print(f"| - | {name} | - | {r['part_nmi']:.3f} | {r['part_miou']:.3f} | {r['largest_part']:.2f} | "
              f"{r['parts_used']} | {r['iou']:.3f} | {r['mae_sum']:.2f} | - | - |")
    lines = summary(rows)
    print("\n| recipe | kinds | runs | part NMI mean | part NMI worst (kind) | fg IoU mean | fg IoU worst (kind) | "
          "largest part mean | largest part worst (kind) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in lines:
        print(f"| {r['recipe']} | {r['kinds']} | {r['runs']} | {r['part_nmi_mean']:.3f} | {r['part_nmi_worst']:.3f} "
              f"({r['part_nmi_worst_kind']}) | {r['iou_mean']:.3f} | {r['iou_worst']:.3f} ({r['iou_worst_kind']}) | "
              f"{r['largest_part_mean']:.2f} | {r['largest_part_worst']:.2f} ({r['largest_part_worst_kind']}) |")
    print(json.dumps({"cpu": cpu_name(), "threads": opts.threads, "held_out_kinds": list(HELD_OUT_KINDS), "rows": rows,
                      "summary": lines, "baselines": baselines}))


if __name__ == "__main__":
    main()
