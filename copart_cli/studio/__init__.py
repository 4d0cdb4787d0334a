"""copart studio: a local web page over the same jobs the commands run.

- :mod:`.files`: the folders the studio may touch (its workspace and the folders given on the
  command line) and the one function that turns a path from the browser into a file there.
- :mod:`.work`: what the page asks for, as plain functions: media and models to choose from,
  one frame's segmentation, a preview (:func:`copart.editing.swap.swap` on a few frames), a
  render (the same swap, whole, with a progress callback) in one background worker, part
  names saved as ``copart parts --name`` saves them, a training run's log and pictures.
- :mod:`.server`: the HTTP side (Starlette): routes, the access token, the size limit.
- ``static/``: the page (plain HTML, CSS and JavaScript; no build step, nothing from a CDN).

Nothing here imports the web stack at package import time: ``copart --help`` stays light, and
``copart studio`` without the ``studio`` extra says which extra to install.
"""
