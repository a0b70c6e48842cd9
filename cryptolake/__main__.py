"""``python -m cryptolake``: the same as the ``cryptolake`` command."""

from cryptolake.cli import main

if __name__ == "__main__":
    main()
