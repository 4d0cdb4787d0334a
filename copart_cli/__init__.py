"""copart: part-level video editing with motion-supervised co-part segmentation."""

__version__ = "0.1.0"
