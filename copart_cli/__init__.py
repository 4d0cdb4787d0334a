"""copart: part-level video editing with motion-supervised co-part segmentation.

Layers, each importing only those below it: ``app`` and ``commands`` (the command line) ->
``demo``, ``editing``, ``training``, ``evaluation`` (the jobs) -> ``loading``, ``inference``
(models by name, the model on batches) -> ``media`` (read, faces, pipeline, write) ->
``models`` (the core, pure PyTorch). ``ui`` (progress bars) serves the commands only.
"""

__version__ = "0.1.0"


def _describe_files() -> None:
    # The model core names what a file given in place of a checkpoint looks like through this.
    from copart.media import kinds
    from copart.models import files

    files.describe = kinds.looks_like


_describe_files()
