"""Media in and out: reading (``read``), faces (``faces``), the frame pipeline (``pipeline``),
writing (``write``), part-map pictures (``render``) and streamed mask files (``masks``)."""
