"""copart's model core: motion-supervised co-part segmentation in pure PyTorch.

No command line, no video code, no printing: everything ``copart`` computes goes
through these modules. Names follow the paper (Siarohin et al., 2020):

- :mod:`copart.models.segmentation` - part maps, anchors (shift) and affine matrices;
- :mod:`copart.models.motion` - Eq. 2 (segment motion), Eq. 3 (flow), Eq. 4 (visibility), warping;
- :mod:`copart.models.reconstruction` - the reconstruction module and part swap (Eq. 5);
- :mod:`copart.models.model` - both modules together, and the cached-source swap API;
- :mod:`copart.models.losses` - perceptual / pixel pyramid and equivariance losses;
- :mod:`copart.models.config`, :mod:`copart.models.checkpoint` - configurations and checkpoints.
"""

from importlib import import_module

from .config import VARIANTS, ModelConfig, apply_variant
from .errors import CopartError

# The torch-backed names load on first use, so that importing copart.models.errors or
# copart.models.config (as ``copart --help`` does) does not load PyTorch.
_LAZY = {"CoPartModel": "model", "SourceState": "model", "part_mask": "model", "PartSegmentation": "segmentation"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CoPartModel",
    "CopartError",
    "ModelConfig",
    "PartSegmentation",
    "SourceState",
    "VARIANTS",
    "apply_variant",
    "part_mask",
]
