"""``python -m guard``: the same as the ``guard`` command."""

from guard.ops.cli import main

if __name__ == "__main__":
    main()
