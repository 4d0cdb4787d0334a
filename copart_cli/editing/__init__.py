"""The editing jobs behind ``copart swap`` and ``copart segment``: files in, files out,
a summary back. The commands and the demo call them alike."""
