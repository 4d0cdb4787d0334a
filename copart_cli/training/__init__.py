"""Training: data (``data``), the loop (``loop``) and copart's synthetic clips (``synthetic``)."""
