"""Evaluation: the paper's metrics (``metrics``), landmark and mask files (``formats``), and
the evaluation job (``evaluate``)."""
