"""``copart eval``: the paper's metrics (landmark-regression MAE, foreground IoU)."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from models.errors import CopartError

from . import evaluation, metrics, options
from .faces import best_face, face_to_box, make_detector
from .loading import pick_device, resolve_model
from .pipeline import WHOLE, autocast, progress_bar, take, to_tensor
from .segment import frame_maps
from .video import read_image, write_image

HELP = "Score a model with the paper's metrics: landmark-regression MAE and foreground IoU."
EPILOG = (
    "Examples:\n\n"
    "  copart eval data/vox-eval --k 10 --metric mae --trust-pickle\n\n"
    "  copart eval demo/eval --checkpoint runs/demo/checkpoint.pth --metric all --plot eval.png --json\n\n"
    "ROOT holds train/ (fit set) and test/ (held-out) images, landmarks (the authors' *_gt.pkl, or\n"
    "<split>_landmarks.npz/.csv) and, for IoU, masks/test/ PNGs."
)


class Metric(str, Enum):
    mae = "mae"
    iou = "iou"
    all = "all"


class Scorer:
    """Part centres (and foreground) of images in their own pixel coordinates, in batches."""

    def __init__(self, model, device: str, precision: str, detector=None, margin: float = 0.3):
        self.model, self.device, self.precision = model.eval(), device, precision
        self.size = model.config.image_size[0]
        self.detector, self.margin = detector, margin
        self.started, self.done = time.perf_counter(), 0

    def run(self, files: list[Path], batch_size: int, want_foreground: bool, bar=None, task=None):
        centres, foregrounds = [], []
        for i in range(0, len(files), batch_size):
            images = [read_image(f) for f in files[i : i + batch_size]]
            regions = [self._region(im) for im in images]
            crops = [take(im, r, self.size) for im, r in zip(images, regions)]
            with torch.inference_mode(), autocast(self.device, self.precision):
                seg = self.model.segment(to_tensor(crops, self.device)).segmentation.float().cpu()
            for image, region, maps in zip(images, regions, seg):
                full = maps[None] if region is WHOLE else self._place(maps.numpy(), region, image.shape)
                size = image.shape[:2]
                full = torch.as_tensor(full)
                centres.append(metrics.part_centres(full, size)[0])
                if want_foreground:
                    foregrounds.append(metrics.foreground(full, size)[0])
            self.done += len(images)
            if bar is not None:
                rate = self.done / max(time.perf_counter() - self.started, 1e-9)
                bar.update(task, advance=len(images), rate=f"{rate:.2f}")
        return np.stack(centres), (foregrounds if want_foreground else None)

    def _region(self, image):
        if self.detector is None:
            return WHOLE
        face = best_face(self.detector.detect(image))
        return face_to_box(face, self.margin) if face is not None else WHOLE

    @staticmethod
    def _place(maps: np.ndarray, region, shape) -> np.ndarray:
        """Part maps of a face crop placed in the whole image (background elsewhere)."""
        h, w = shape[:2]
        placed, (x0, y0, x1, y1) = frame_maps(maps, region, shape)
        full = np.zeros((maps.shape[0], h, w), np.float32)
        full[0] = 1
        full[:, y0:y1, x0:x1] = placed
        return full[None]


def plot(files, truth, predicted, foreground, out: Path, count: int = 6) -> None:
    """True (green) and predicted (red) landmarks and the predicted foreground (tinted)."""
    tiles = []
    for i in sorted(set(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int).tolist())):
        image = read_image(files[i]).astype(np.float32)
        sy, sx = 256 / image.shape[0], 256 / image.shape[1]
        if foreground is not None:
            image[foreground[i]] = 0.6 * image[foreground[i]] + 0.4 * np.array([60, 120, 255])
        image = cv2.resize(image.clip(0, 255).astype(np.uint8), (256, 256))
        for points, colour in ((truth[i], (0, 200, 0)), (predicted[i], (230, 30, 30))):
            for x, y in points:
                if x >= 0 and y >= 0 and np.isfinite(x) and np.isfinite(y):
                    cv2.circle(image, (int(round(x * sx)), int(round(y * sy))), 3, colour, -1, cv2.LINE_AA)
        tiles.append(image)
    write_image(np.concatenate(tiles, axis=1), out)


def eval_command(
    root: Path = typer.Argument(..., help="Folder with train/ and test/ images, landmarks and masks."),
    metric: Metric = typer.Option(Metric.all, "--metric", "-m", help="mae, iou or all."),
    k: options.K = None,
    preset: options.Preset = None,
    checkpoint: options.Checkpoint = None,
    fit_landmarks: Optional[Path] = typer.Option(None, "--fit-landmarks", help="Landmarks of train/ (default: found in ROOT)."),
    test_landmarks: Optional[Path] = typer.Option(None, "--test-landmarks", help="Landmarks of test/."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Foreground masks of test/ (default ROOT/masks/test)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Read the authors' pickled landmark tables."),
    crop: bool = typer.Option(False, "--crop", help="Detect and crop faces first (evaluation images are crops already)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write predicted vs true landmarks on test images."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    device: options.Device = "auto",
    precision: options.PrecisionOption = options.Precision.fp32,
) -> None:
    console = Console(stderr=True, highlight=False)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CopartError(f"Evaluation folder {root} does not exist.")
    want_mae, want_iou = metric in (Metric.mae, Metric.all), metric in (Metric.iou, Metric.all)
    test_files = evaluation.images_of(root / "test")
    fit_files = evaluation.images_of(root / "train") if want_mae else []
    test_names = [f.name for f in test_files]
    device = pick_device(device)  # before face-alignment, which takes no "auto"
    if want_mae:
        fit_lm, test_lm = (
            _landmarks(root, split, files, given, trust_pickle, device)
            for split, files, given in (("train", fit_files, fit_landmarks), ("test", test_files, test_landmarks))
        )
    if want_iou:
        truth_masks = evaluation.read_masks(Path(masks) if masks else root / "masks" / "test", test_names)
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise CopartError(f"--plot {plot_path} must be a .png file.")

    loaded = resolve_model(k, preset, checkpoint, device)
    detector = make_detector("auto", device, []) if crop else None
    scorer = Scorer(loaded.model, device, precision.value, detector)
    with progress_bar(console, "images") as bar:
        task = bar.add_task("eval", total=len(fit_files) + len(test_files), rate="-")
        fit_centres = scorer.run(fit_files, batch_size, False, bar, task)[0] if want_mae else None
        test_centres, test_fg = scorer.run(test_files, batch_size, want_iou or plot_path is not None, bar, task)
    results: dict = {"root": str(root), "num_segments": loaded.model.num_segments, "fit_images": len(fit_files),
                     "test_images": len(test_files)}
    predicted = None
    if want_mae:
        regression = metrics.landmark_regression(fit_centres, fit_lm, test_centres, test_lm)
        predicted = regression.pop("predicted")
        results["mae"] = {"sum": regression["mae_sum"], "mean": regression["mae_mean"],
                          "landmarks": int(fit_lm.shape[1])}
    if want_iou:
        for name, fg, mask in zip(test_names, test_fg, truth_masks):
            if fg.shape != mask.shape:
                raise CopartError(f"Mask of {name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                  f"{fg.shape[1]}x{fg.shape[0]}; a mask must have its image's size.")
        results["iou"] = metrics.iou(test_fg, truth_masks)
    if plot_path is not None:
        plot(test_files, test_lm if want_mae else np.zeros((len(test_files), 0, 2)),
             predicted if predicted is not None else np.zeros((len(test_files), 0, 2)), test_fg, plot_path)
        results["plot"] = str(plot_path)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    table = Table(title=f"copart eval: {root} (K = {results['num_segments']})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "mae" in results:
        table.add_row("landmark MAE, sum over coordinates (paper's Table 1)", f"{results['mae']['sum']:.2f}")
        table.add_row("landmark MAE, mean per coordinate (pixels)", f"{results['mae']['mean']:.3f}")
    if "iou" in results:
        table.add_row("foreground IoU (mean over images)", f"{results['iou']['iou_mean']:.4f}")
    table.add_row("images (fit / held-out)", f"{len(fit_files)} / {len(test_files)}")
    Console(highlight=False).print(table)
    if plot_path is not None:
        typer.echo(f"Plot -> {plot_path}")


def _landmarks(root, split, files, given, trust_pickle, device) -> np.ndarray:
    path = evaluation.find_landmarks(root, split, given)
    if path is None:
        return evaluation.face_alignment_landmarks(files, root / f"{split}_landmarks.npz", device)
    return evaluation.read_landmarks(path, [f.name for f in files], trust_pickle)
