"""The ``cryptolake`` command: a thin layer over the Python API.

Each command resolves the settings (defaults < config.toml < .env < environment < flags), builds
the objects, calls one library function and renders the result. Errors become one line on stderr:
exit 2 for bad usage or configuration, exit 1 for everything else; ``--debug`` shows tracebacks.
Heavy libraries are imported inside the commands so that ``cryptolake --help`` stays fast.

One module per group of commands (``collect``, ``lake``, ``load``, ``scheduler``, ``stream``, ``verify``, ``misc``), their
shared options and helpers in ``options``, the group and entry point in ``app``; the modules below
register their commands on import.
"""

from __future__ import annotations

from cryptolake.cli import collect, lake, load, misc, quality, scheduler, stream, verify  # noqa: F401  (register the commands)
from cryptolake.cli.app import cli, main

__all__ = ["cli", "main"]
