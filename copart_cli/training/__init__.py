"""Training: data (``data``); the loop (``loop``), whose named steps live in ``run`` (start or
resume, the run folder), ``processes`` (the process group), ``checkpoints`` (writing, retention,
resuming), ``stopping`` (signals, worker failures) and ``records`` (log, pictures); and copart's
synthetic clips (``synthetic``)."""
