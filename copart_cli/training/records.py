"""What a run writes for its reader, besides checkpoints: ``config.yaml``, ``log.jsonl`` with
every loss, and the ``train-vis/<step>.png`` pictures (all on rank 0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from copart.media import render
from copart.media.write import write_atomic_text, write_image


def write_config(out: Path, config: dict) -> None:
    """The run's configuration, as ``config.yaml`` (a new run's, once)."""
    write_atomic_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a killed run may have logged past its last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut by the kill
    write_atomic_text(path, "".join(k + "\n" for k in kept))


def log_step(log, step: int, values: dict, rate: float) -> None:
    """One line of ``log.jsonl``: the step, its losses and the training speed, flushed at once."""
    log.write(json.dumps({"step": step, **values, "pairs_per_s": round(rate, 3)}) + "\n")
    log.flush()


def visualise(batch: dict, generated: dict, num_segments: int, limit: int = 4) -> np.ndarray:
    """Rows of source, target, warped source, reconstruction, target segmentation coloured,
    visibility (like the authors' train-vis)."""
    source, target = batch["source"][:limit].float(), batch["target"][:limit].float()
    size = target.shape[2:]
    columns = [source, target]
    if "deformed" in generated:
        columns.append(generated["deformed"][:limit].detach().float())
    columns.append(generated["prediction"][:limit].detach().float())
    seg = F.interpolate(generated["seg_target"].segmentation[:limit].detach().float(), size=size, mode="bilinear",
                        align_corners=False)
    colours = torch.from_numpy(render.palette(num_segments)).float() / 255
    columns.append(torch.einsum("bkhw,kc->bchw", seg.cpu(), colours))
    if "visibility_maps" in generated:
        vis = F.interpolate(generated["visibility_maps"][:limit].detach().float(), size=size, mode="bilinear",
                            align_corners=False)
        columns.append(vis.expand(-1, 3, -1, -1))
    rows = [torch.cat([c[i].cpu() for c in columns], dim=2) for i in range(len(source))]
    grid = torch.cat(rows, dim=1).clamp(0, 1)
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def write_picture(out: Path, step: int, source: torch.Tensor, target: torch.Tensor, generated: dict,
                  num_segments: int) -> None:
    """``train-vis/<step>.png``: the picture of this step's batch."""
    picture = visualise({"source": source, "target": target}, generated, num_segments)
    (out / "train-vis").mkdir(exist_ok=True)
    write_image(picture, out / "train-vis" / f"{step:08d}.png")
