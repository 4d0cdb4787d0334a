"""``python -m copart``: the same as the ``copart`` command."""

from copart.app import main

if __name__ == "__main__":
    main()
