"""Does training learn parts? Train on synthetic articulated-motion videos, then score.

    python benchmarks/train_benchmark.py [--steps 1500] [--threads 2] [--out bench-run]

Generates synthetic videos (64 px, ground-truth parts and landmarks), trains the
`cpu-64-sem-5segments` preset with the pixel-pyramid loss on the CPU for a fixed number
of steps (batch 16), and scores with the paper's metrics on the held-out clips:
foreground IoU and landmark-regression MAE (regression fitted on frames of the training
clips, scored on the test clips), against the untrained model and an appearance-only
baseline (k-means on colour and position, per image). Prints a table and JSON, with the
CPU's name and pairs/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from copart import presets
from copart.evaluation import metrics
from copart.media.read import MediaReader
from copart.models import CoPartModel, ModelConfig
from copart.models.checkpoint import load_model
from copart.training.loop import TrainSettings, train
from copart.training.synthetic import generate

sys.path.insert(0, str(Path(__file__).parent))
from swap_benchmark import cpu_name  # noqa: E402


def frames_and_truth(data: Path, split: str, every: int):
    images, landmarks, masks = [], [], []
    for video in sorted((data / split).glob("*.mp4")):
        truth = np.load(data / "groundtruth" / f"{video.stem}.npz")
        with MediaReader(video) as reader:
            for frame in reader.frames():
                if frame.index % every == 0:
                    images.append(frame.image)
                    landmarks.append(truth["landmarks"][frame.index])
                    masks.append(truth["foreground"][frame.index])
    return np.stack(images), np.stack(landmarks), np.stack(masks)


def segment(model: CoPartModel, images: np.ndarray) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            batch = torch.from_numpy(images[i : i + 64]).permute(0, 3, 1, 2).float() / 255
            out.append(model.segment(batch).segmentation)
    return torch.cat(out)


def score(fit_maps, test_maps, fit_lm, test_lm, test_masks, size) -> dict:
    fit_c, test_c = metrics.part_centres(fit_maps, size), metrics.part_centres(test_maps, size)
    regression = metrics.landmark_regression(fit_c, fit_lm, test_c, test_lm)
    overlap = metrics.iou(metrics.foreground(test_maps, size), test_masks)
    return {"iou": round(overlap["iou_mean"], 4), "mae_sum": round(regression["mae_sum"], 3),
            "mae_mean": round(regression["mae_mean"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-train"))
    parser.add_argument("--videos", type=int, default=28)
    parser.add_argument("--test", type=int, default=4)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    data, run = opts.out / "data", opts.out / "run"
    generate(data, videos=opts.videos, frames=48, size=64, test=opts.test)
    config = presets.load("cpu-64-sem-5segments")

    started = time.perf_counter()
    if not (run / "checkpoint.pth").exists():
        report = train(config, run, TrainSettings(data=str(data), steps=opts.steps, batch_size=16, workers=1,
                                                  checkpoint_every=250, vis_every=250, loss="pixel"),
                       label="cpu-64-sem-5segments", force=True,
                       on_step=lambda s, t, l, r: print(f"step {s}/{t} loss {l['total']:.3f} {r:.1f} pairs/s",
                                                        flush=True) if s % 50 == 0 else None)
        pairs_per_s = report.pairs_per_second
    else:
        pairs_per_s = None
    seconds = time.perf_counter() - started

    fit_images, fit_lm, _ = frames_and_truth(data, "train", every=4)
    test_images, test_lm, test_masks = frames_and_truth(data, "test", every=1)
    size = test_images.shape[1:3]
    trained = load_model(run / "checkpoint.pth").model
    torch.manual_seed(0)
    untrained = CoPartModel(ModelConfig.from_dict(config))
    results = {"cpu": cpu_name(), "threads": opts.threads, "steps": opts.steps, "batch_size": 16,
               "train_seconds": round(seconds, 1), "pairs_per_s": round(pairs_per_s, 2) if pairs_per_s else None,
               "fit_frames": len(fit_images), "test_frames": len(test_images)}
    for name, model in (("trained", trained), ("untrained", untrained)):
        results[name] = score(segment(model, fit_images), segment(model, test_images), fit_lm, test_lm, test_masks,
                              size)
    k = trained.num_segments
    kmeans = lambda images: torch.from_numpy(np.stack([metrics.kmeans_parts(im, k) for im in images]))
    results["kmeans"] = score(kmeans(fit_images), kmeans(test_images), fit_lm, test_lm, test_masks, size)
    print(f"{'model':<10} {'IoU':>6} {'MAE sum':>9} {'MAE mean':>9}")
    for name in ("trained", "untrained", "kmeans"):
        r = results[name]
        print(f"{name:<10} {r['iou']:>6.3f} {r['mae_sum']:>9.2f} {r['mae_mean']:>9.3f}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
