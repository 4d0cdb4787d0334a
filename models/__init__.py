"""copart's model core: motion-supervised co-part segmentation in pure PyTorch.

No command line, no video code, no printing: everything ``copart`` computes goes
through these modules. Names follow the paper (Siarohin et al., 2020):

- :mod:`models.segmentation` - part maps, anchors (shift) and affine matrices;
- :mod:`models.motion` - Eq. 2 (segment motion), Eq. 3 (flow), Eq. 4 (visibility), warping;
- :mod:`models.reconstruction` - the reconstruction module and part swap (Eq. 5);
- :mod:`models.model` - both modules together, and the cached-source swap API;
- :mod:`models.losses` - perceptual / pixel pyramid and equivariance losses;
- :mod:`models.config`, :mod:`models.checkpoint` - configurations and checkpoints.
"""

from .config import VARIANTS, ModelConfig, apply_variant
from .errors import CopartError
from .model import CoPartModel, SourceState, part_mask
from .segmentation import PartSegmentation

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
