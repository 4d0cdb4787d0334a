"""The paper's metrics (Sec. 4, after Hung et al.), following the authors' evaluate.py.

- Part centres: each foreground part map, upsampled bilinearly to the image size, plus
  1e-6, normalised to sum 1; its centre of mass on the grid ``x = i / W * 2 - 1``,
  mapped back to pixels.
- Landmark-regression MAE: one least-squares regression with intercept per landmark
  coordinate, from all K centres, fitted on a fit set and scored on a held-out set;
  entries marked -1 are left out of both. The paper's figure is the sum of the
  per-coordinate mean absolute errors.
- Foreground IoU: foreground = sum of the K part maps > 0.5, against a ground-truth mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def part_centres(segmentation: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(N, K+1, h, w)`` part maps -> ``(N, K, 2)`` centres (x, y) in pixels of a ``size`` image."""
    height, width = size
    maps = F.interpolate(segmentation.float(), size=(height, width), mode="bilinear", align_corners=False)[:, 1:]
    maps = maps + 1e-6
    maps = maps / maps.sum(dim=(2, 3), keepdim=True)
    x = torch.arange(width, dtype=torch.float32) / width * 2 - 1
    y = torch.arange(height, dtype=torch.float32) / height * 2 - 1
    xc = (maps * x.view(1, 1, 1, -1)).sum(dim=(2, 3))
    yc = (maps * y.view(1, 1, -1, 1)).sum(dim=(2, 3))
    return torch.stack([(xc + 1) / 2 * width, (yc + 1) / 2 * height], dim=-1).numpy()


def _fit_with_intercept(features: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares with an intercept as scikit-learn's LinearRegression (the authors' choice)
    fits it: centre both sides, take the minimum-norm solution, then the intercept. With fewer
    images than centres this gives their answer, where a column of ones in the design would not."""
    mean_x, mean_y = features.mean(axis=0), values.mean()
    coef, *_ = np.linalg.lstsq(features - mean_x, values - mean_y, rcond=None)
    return coef, float(mean_y - mean_x @ coef)


def landmark_regression(
    fit_centres: np.ndarray, fit_landmarks: np.ndarray, test_centres: np.ndarray, test_landmarks: np.ndarray
) -> dict:
    """Regress ``(N, L, 2)`` landmarks from ``(N, K, 2)`` centres; score on the held-out set.

    Returns ``{"mae_sum": paper's figure, "mae_mean": mean per coordinate,
    "per_coordinate": [...], "predicted": (M, L, 2) test predictions}``.
    """
    fit_x = fit_centres.reshape(len(fit_centres), -1).astype(np.float64)
    test_x = test_centres.reshape(len(test_centres), -1).astype(np.float64)
    scores, predicted = [], np.full(test_landmarks.shape, np.nan)
    for i in range(fit_landmarks.shape[1]):
        for j in range(2):
            keep = fit_landmarks[:, i, j] != -1
            if not keep.any():
                continue
            coef, intercept = _fit_with_intercept(fit_x[keep], fit_landmarks[keep, i, j].astype(np.float64))
            prediction = test_x @ coef + intercept
            predicted[:, i, j] = prediction
            held = test_landmarks[:, i, j] != -1
            if held.any():
                scores.append(float(np.mean(np.abs(prediction[held] - test_landmarks[held, i, j]))))
    return {
        "mae_sum": float(np.sum(scores)),
        "mae_mean": float(np.mean(scores)) if scores else float("nan"),
        "per_coordinate": scores,
        "predicted": predicted,
    }


def foreground(segmentation: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` bool: the K part maps (upsampled to ``size``) sum to more than 0.5."""
    maps = F.interpolate(segmentation.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return (maps[:, 1:].sum(dim=1) > 0.5).numpy()


def iou(predicted, truth) -> dict:
    """Foreground IoU of pairs of ``(H, W)`` masks (arrays ``(N, H, W)`` or lists of masks of
    any sizes): the mean over images and over all pixels."""
    inter = np.array([np.count_nonzero(np.logical_and(p, t)) for p, t in zip(predicted, truth)], np.float64)
    union = np.array([np.count_nonzero(np.logical_or(p, t)) for p, t in zip(predicted, truth)], np.float64)
    per_image = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"iou_mean": float(per_image.mean()), "iou_total": float(inter.sum() / max(union.sum(), 1))}


def kmeans_parts(image: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """An appearance-only baseline: k-means on colour and position of one image, giving
    ``(K+1, H, W)`` one-hot maps; the cluster that covers most of the image border is the
    background (channel 0)."""
    import cv2

    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    features = np.concatenate([image.reshape(-1, 3).astype(np.float32) / 255,
                               0.5 * np.stack([xx.ravel() / w, yy.ravel() / h], 1)], 1)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
    _, labels, _ = cv2.kmeans(features, k + 1, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(h, w)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = np.bincount(border, minlength=k + 1).argmax()
    order = [background] + [c for c in range(k + 1) if c != background]
    return np.stack([(labels == c) for c in order]).astype(np.float32)


# Part-level scores against ground-truth part labels (copart's synthetic clips know each pixel's
# part). The predicted part of a pixel is the most likely of the K part channels (1..K) where the
# truth is figure, and the most likely of all K+1 channels for the IoU.


def most_likely(segmentation: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K+1, h, w)`` maps upsampled to ``size`` -> (argmax over all channels, argmax over the
    part channels 1..K), both ``(N, H, W)`` int."""
    maps = F.interpolate(segmentation.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return maps.argmax(dim=1).numpy(), (maps[:, 1:].argmax(dim=1) + 1).numpy()


def normalised_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """NMI of two labellings of the same items, normalised by the mean of their entropies
    (scikit-learn's default, ``average_method='arithmetic'``); 0 when either is constant."""
    a, b = np.unique(np.asarray(a).ravel(), return_inverse=True)[1], np.unique(np.asarray(b).ravel(), return_inverse=True)[1]
    joint = np.zeros((a.max() + 1, b.max() + 1), np.float64)
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    entropy = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())
    ha, hb = entropy(pa), entropy(pb)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / (pa[:, None] * pb[None, :])[nz])).sum())
    return mutual / ((ha + hb) / 2) if ha > 0 and hb > 0 else 0.0


def part_scores(fit_maps: torch.Tensor, fit_labels: np.ndarray, test_maps: torch.Tensor,
                test_labels: np.ndarray) -> dict:
    """How well the parts follow the true parts, on a held-out set.

    - ``part_nmi``: NMI between the most likely part and the true part over the test figures' pixels;
    - ``part_miou``: each part channel is given the true part it overlaps most on the fit set (the
      background channel stays background); the mean over true parts of their IoU on the test set,
      pooled over frames;
    - ``largest_part``: the share of the test figures' pixels whose most likely part is the most
      common one (1.0: one part covers the figure);
    - ``parts_used``: how many part channels are the most likely part of at least 1 % of the figure.
    """
    labels_fit, labels_test = np.asarray(fit_labels), np.asarray(test_labels)
    size = labels_test.shape[1:]
    fit_all, _ = most_likely(fit_maps, size)
    test_all, test_parts = most_likely(test_maps, size)
    channels = fit_maps.shape[1]
    truths = int(max(labels_fit.max(), labels_test.max())) + 1
    overlap = np.zeros((channels, truths), np.int64)
    np.add.at(overlap, (fit_all.ravel(), labels_fit.ravel()), 1)
    assigned = overlap[:, 1:].argmax(1) + 1  # each part channel: the true part it overlaps most
    assigned[0] = 0  # the background channel stays background
    mapped = assigned[test_all]
    ious = []
    for part in range(1, truths):
        truth = labels_test == part
        union = np.count_nonzero(truth | (mapped == part))
        if np.count_nonzero(truth):
            ious.append(np.count_nonzero(truth & (mapped == part)) / max(union, 1))
    figure = labels_test > 0
    found = test_parts[figure]
    counts = np.bincount(found, minlength=channels)[1:]
    return {
        "part_nmi": normalised_mutual_information(found, labels_test[figure]),
        "part_miou": float(np.mean(ious)) if ious else 0.0,
        "largest_part": float(counts.max() / max(counts.sum(), 1)),
        "parts_used": int(np.count_nonzero(counts >= 0.01 * counts.sum())),
        "coverage": (counts / max(counts.sum(), 1)).round(4).tolist(),
    }
