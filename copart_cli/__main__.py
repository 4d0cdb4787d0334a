"""``python -m copart_cli``: the same as the ``copart`` command."""

from copart_cli.app import main

if __name__ == "__main__":
    main()
