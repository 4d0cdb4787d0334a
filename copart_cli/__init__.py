"""copart: part-level video editing with motion-supervised co-part segmentation.

Layers, each importing only those below it: ``app`` and ``commands`` (the command line) ->
``demo``, ``editing``, ``training``, ``evaluation`` (the jobs) -> ``loading``, ``inference``
(models by name, the model on batches) -> ``media`` (read, faces, pipeline, write) ->
``models`` (the core, pure PyTorch). ``ui`` (progress bars) serves the commands only.
"""

__version__ = "0.1.0"
