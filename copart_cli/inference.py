"""The model on batches of images: tensors in and out, the run-time policy (precision, batch
size, memory layout, compute threads: what each device runs fastest, chosen in one place
each), and the two callables the frame pipeline runs (:class:`PartSwapper`, :class:`Segmenter`)."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from copart.models.errors import CopartError
from copart.models.model import CoPartModel

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Frames per model batch where none is given. Measured on 2-core CPUs (vox-256-sem-10segments,
# 256 px, source cached): batch 1 ran 9 % faster than batch 4 on an AMD EPYC and was as fast or
# faster on an Intel Xeon (see the README's speed section): the convolutions already fill the
# cores with one frame, and larger batches only add memory traffic. On CUDA a batch fills the
# GPU; 8 is a conventional choice there, not a measurement (no GPU was available).
AUTO_BATCH = {"cpu": 1, "cuda": 8}


@functools.lru_cache(maxsize=1)
def cpu_features() -> tuple[str, frozenset]:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``, ...) and its feature flags, as
    /proc/cpuinfo lists them (empty where there is none)."""
    vendor, flags = "", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key == "flags" and not flags:
                flags = frozenset(value.split())
            if vendor and flags:
                break
    except OSError:
        pass
    return vendor, flags


def fast_cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 faster than float32: AMX tiles (Intel Sapphire
    Rapids and later), or AVX-512 BF16 on AMD (Zen 4 and later, where VDPBF16PS runs at twice
    the float32 rate). Intel's AVX-512 BF16 without AMX is *not* faster: on a 2-core Xeon
    (avx512_bf16, no AMX) bfloat16 matrix products ran at 72 GFLOPS against 130 for float32,
    and copart's model at 0.7x of float32 (README, speed section)."""
    vendor, flags = cpu_features()
    if not torch.backends.mkldnn.is_available():
        return False
    if "amx_bf16" in flags:
        return True
    return "avx512_bf16" in flags and vendor == "AuthenticAMD"


def auto_precision(device: str) -> str:
    """What ``--precision auto`` runs: bf16 where the hardware computes it faster than fp32
    (CUDA compute capability 8.0 and later; CPUs: :func:`fast_cpu_bf16`), fp32 elsewhere."""
    kind = torch.device(device).type
    if kind == "cuda":
        major, _ = torch.cuda.get_device_capability(torch.device(device))
        return "bf16" if major >= 8 else "fp32"
    if kind == "cpu":
        return "bf16" if fast_cpu_bf16() else "fp32"
    return "fp32"


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` made concrete for ``device``; fp32, bf16 and fp16 stay as given."""
    if precision not in PRECISIONS:
        raise CopartError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    return auto_precision(device) if precision == "auto" else precision


def resolve_batch_size(batch_size: Union[int, str, None], device: str) -> int:
    """``auto`` (or None) made concrete for ``device`` (:data:`AUTO_BATCH`); a number stays."""
    if batch_size in (None, "auto"):
        return AUTO_BATCH.get(torch.device(device).type, 1)
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        raise CopartError(f"Batch size '{batch_size}' is neither auto nor a number.") from None
    if value < 1:
        raise CopartError(f"Batch size {value} must be at least 1.")
    return value


def channels_last_for(device: str) -> bool:
    """Whether the model runs with channels-last memory on ``device``: on CUDA (tensor cores
    want it). Not on the CPU: there the evidence is mixed (faster in single-thread A/B runs on a
    shared machine, 0.89x of the default layout in the quiet benchmark run of 2026-12-01), and
    the default layout keeps fp32 outputs bit-identical to the parity tests' (README, speed)."""
    return torch.device(device).type == "cuda"


def physical_cores() -> int:
    """Physical cores this process may run on: the distinct (package, core) pairs of the CPUs
    in its affinity mask (hyper-threads share a core), capped by a cgroup CPU quota."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = max(1, len(cores))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def set_compute_threads() -> int:
    """PyTorch's compute threads: one per physical core (:func:`physical_cores`), unless the
    user chose with ``OMP_NUM_THREADS`` (then PyTorch's own reading of it stands). Returns the
    number in use. Hyper-threads add nothing to convolutions; on a machine busy with other
    work fewer threads can be faster (README, speed section), which ``OMP_NUM_THREADS`` sets."""
    if not os.environ.get("OMP_NUM_THREADS"):
        wanted = physical_cores()
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


def keeps_thread_count(function):
    """``function`` (a job that calls :func:`set_compute_threads`) with torch's global thread
    count restored after it returns or fails: a library call leaves the caller's setting as it
    found it."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        before = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    return call


def to_tensor(images: Sequence[np.ndarray], device, channels_last: bool = False) -> torch.Tensor:
    """``(B, 3, S, S)`` float in [0, 1] from RGB uint8 arrays (uploaded as uint8, from pinned
    memory and without waiting, on CUDA; converted to float on the device)."""
    batch = torch.from_numpy(np.stack(images))
    if torch.device(device).type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch.contiguous()


def to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """RGB uint8 arrays from ``(B, 3, S, S)`` in [0, 1]."""
    out = batch.detach().float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(out)


def autocast(device: str, precision: str):
    """A mixed-precision context for ``precision`` (fp32: none; ``auto`` as :func:`auto_precision`)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def in_layout(model: CoPartModel, channels_last: bool) -> CoPartModel:
    """``model`` in the memory layout asked for: the model itself where its 4-D weights already
    are in that layout, else a copy converted once. The caller's model is never changed."""
    wanted = torch.channels_last if channels_last else torch.contiguous_format
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dim() != 4 or t.is_contiguous(memory_format=wanted) for t in tensors):
        return model
    return copy.deepcopy(model).to(memory_format=wanted)


class PartSwapper:
    """Swaps ``parts`` of one source face into batches of target crops.

    The source is segmented and encoded once (:meth:`CoPartModel.prepare_source`);
    each call does only the target work. ``precision`` may be ``auto``
    (:func:`auto_precision`); ``channels_last`` None follows :func:`channels_last_for`. The
    caller's model keeps its memory layout: where another is wanted, a copy in it is made once.
    """

    def __init__(
        self,
        model: CoPartModel,
        source: np.ndarray,
        parts: Sequence[int],
        device: str = "cpu",
        precision: str = "fp32",
        hard: bool = False,
        source_mask: bool = False,
        keep_outside: bool = False,
        channels_last: Optional[bool] = None,
    ):
        self.keep_outside = keep_outside
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.parts = list(parts)
        self.hard = hard
        self.source_mask = source_mask
        self.channels_last = channels_last_for(device) if channels_last is None else channels_last
        self.model = in_layout(model, self.channels_last).eval()
        with torch.inference_mode(), autocast(device, self.precision):
            self.source = self.model.prepare_source(to_tensor([source], device, self.channels_last))

    def __call__(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode(), autocast(self.device, self.precision):
            target = to_tensor(crops, self.device, self.channels_last)
            out = self.model.swap(self.source, target, self.parts, hard=self.hard,
                                  use_source_segmentation=self.source_mask, keep_outside=self.keep_outside)
        return to_images(out)


class Segmenter:
    """Part maps, anchors and matrices of batches of crops (float16-rounded part maps)."""

    def __init__(self, model: CoPartModel, device: str, precision: str = "fp32",
                 channels_last: Optional[bool] = None):
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.channels_last = channels_last_for(device) if channels_last is None else channels_last
        self.model = in_layout(model, self.channels_last).eval()

    def segment(self, crops: list[np.ndarray]):
        """The model's :class:`~copart.models.segmentation.PartSegmentation` of a batch of crops
        (tensors on the device, in the run's precision)."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.model.segment(to_tensor(crops, self.device, self.channels_last))

    def __call__(self, crops: list[np.ndarray]) -> list[dict]:
        seg = self.segment(crops)
        maps = seg.segmentation.float().contiguous().cpu().numpy().astype(np.float16)
        shift = seg.shift.float().cpu().numpy()
        affine = seg.affine.float().cpu().numpy() if seg.affine is not None else None
        return [
            {"segmentation": maps[i], "shift": shift[i], **({"affine": affine[i]} if affine is not None else {})}
            for i in range(len(crops))
        ]
