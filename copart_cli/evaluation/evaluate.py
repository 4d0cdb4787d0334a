"""The paper's metrics on a folder of evaluation images: landmark-regression MAE (part
centres regressed to landmarks) and foreground IoU."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from copart.inference import Segmenter, keeps_thread_count, resolve_precision, set_compute_threads
from copart.loading import ModelChoice, pick_device
from copart.media.faces import best_face, face_to_box, make_detector
from copart.media.pipeline import Progress, frame_maps, take
from copart.media.read import read_image
from copart.media.region import WHOLE, Region
from copart.media.write import check_output, write_image
from copart.models.errors import CopartError

from . import formats, metrics

METRICS = ("mae", "iou", "all")


class Scorer:
    """Part centres (and foreground) of images in their own pixel coordinates, in batches."""

    def __init__(self, model, device: str, precision: str, detector=None, margin: float = 0.3):
        # The default memory layout on every device: the scores stay those of the plain model.
        self.segmenter = Segmenter(model, device, precision, channels_last=False)
        self.size = model.config.image_size[0]
        self.detector, self.margin = detector, margin
        self.done = 0

    def run(self, files: list[Path], batch_size: int, want_foreground: bool, progress: Optional[Progress] = None,
            total: Optional[int] = None):
        centres, foregrounds = [], []
        for i in range(0, len(files), batch_size):
            images = [read_image(f) for f in files[i : i + batch_size]]
            regions = [self._region(im) for im in images]
            crops = [take(im, r, self.size) for im, r in zip(images, regions)]
            seg = self.segmenter.segment(crops).segmentation.float().cpu()
            for image, region, maps in zip(images, regions, seg):
                full = maps[None] if region.whole else self._place(maps.numpy(), region, image.shape)
                size = image.shape[:2]
                full = torch.as_tensor(full)
                centres.append(metrics.part_centres(full, size)[0])
                if want_foreground:
                    foregrounds.append(metrics.foreground(full, size)[0])
            self.done += len(images)
            if progress is not None:
                progress(self.done, total)
        return np.stack(centres), (foregrounds if want_foreground else None)

    def _region(self, image):
        if self.detector is None:
            return WHOLE
        face = best_face(self.detector.detect(image))
        return Region.of(face_to_box(face, self.margin)) if face is not None else WHOLE

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


@keeps_thread_count
def evaluate(
    root: Path,
    model: ModelChoice = ModelChoice(),
    *,
    metric: str = "all",
    fit_landmarks: Optional[Path] = None,
    test_landmarks: Optional[Path] = None,
    masks: Optional[Path] = None,
    trust_pickle: bool = False,
    crop: bool = False,
    plot_path: Optional[Path] = None,
    batch_size: int = 16,
    device: str = "auto",
    precision: str = "fp32",
    progress: Optional[Progress] = None,
    notice: Callable[[str], None] = lambda text: None,
    downloads=None,
) -> dict:
    """Score ``model`` on ``root`` (``train/`` fit images, ``test/`` held-out images, their
    landmarks and ``masks/test/``); returns the results as plain data: ``mae`` (``sum``, the
    paper's figure, and ``mean`` per coordinate), ``iou`` and the image counts."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CopartError(f"Evaluation folder {root} does not exist.")
    if metric not in METRICS:
        raise CopartError(f"Unknown metric '{metric}'; choose one of {', '.join(METRICS)}.")
    want_mae, want_iou = metric in ("mae", "all"), metric in ("iou", "all")
    test_files = formats.images_of(root / "test")
    fit_files = formats.images_of(root / "train") if want_mae else []
    test_names = [f.name for f in test_files]
    device = pick_device(device)  # before face-alignment, which takes no "auto"
    precision = resolve_precision(precision, device)
    set_compute_threads()
    if want_mae:
        fit_lm, test_lm = (
            _landmarks(root, split, files, given, trust_pickle, device)
            for split, files, given in (("train", fit_files, fit_landmarks), ("test", test_files, test_landmarks))
        )
    mask_folder = Path(masks) if masks else root / "masks" / "test"
    if want_iou:
        truth_masks = formats.read_masks(mask_folder, test_names)
    model.check_files()  # every input before the output
    if plot_path is not None:
        if plot_path.suffix.lower() != ".png":
            raise CopartError(f"--plot {plot_path} must be a .png file.")
        # Never an input; its folder checked before the model is read (an earlier plot is replaced).
        check_output(Path(plot_path), True, [*test_files, *fit_files, *(mask_folder / n for n in test_names)])

    loaded = model.load(device, downloads)
    notices: list[str] = []
    detector = make_detector("auto", device, notices) if crop else None
    for text in notices:
        notice(text)
    scorer = Scorer(loaded.model, device, precision, detector)
    total = len(fit_files) + len(test_files)
    fit_centres = scorer.run(fit_files, batch_size, False, progress, total)[0] if want_mae else None
    test_centres, test_fg = scorer.run(test_files, batch_size, want_iou or plot_path is not None, progress, total)
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
    return results


def _landmarks(root, split, files, given, trust_pickle, device) -> np.ndarray:
    path = formats.find_landmarks(root, split, given)
    if path is None:
        return formats.face_alignment_landmarks(files, root / f"{split}_landmarks.npz", device)
    return formats.read_landmarks(path, [f.name for f in files], trust_pickle)
