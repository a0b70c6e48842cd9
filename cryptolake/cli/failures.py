"""The CLI's one error boundary: every exception becomes one line on stderr and an exit code.

``cryptolake`` commands never print a traceback for an ordinary failure. :func:`describe` turns
any exception into ``(message, exit code)``: the message names the thing that failed and says
what to do, fits on one line, and has every secret hidden (:mod:`cryptolake.redact`). With
``--debug`` the traceback is printed too, also redacted.

Exit codes: 2 for bad usage or configuration, 1 for everything else that failed, 130 and 143
for a run stopped by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import errno
import traceback

from cryptolake.errors import ConfigError, CryptolakeError, Interrupted
from cryptolake.redact import redact

#: Longest message printed; the rest is cut (a driver can put a whole query in its error).
MAX_MESSAGE_CHARS = 600

_OS_HINTS = {
    errno.EROFS: "the file system is read-only: use a lake you can write to (gaps, coverage, status "
    "and sql only read)",
    errno.EACCES: "permission denied: check the owner and mode of that path",
    errno.EPERM: "operation not permitted: check the owner and mode of that path",
    errno.ENOSPC: "the disk is full: free some space and run again (the lake is unchanged)",
    errno.EDQUOT: "the disk quota is exceeded: free some space and run again (the lake is unchanged)",
    errno.ENOTDIR: "a part of that path is a file, not a folder: check --lake / lake.root",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EISDIR: "that path is a folder, not a file",
    errno.EEXIST: "a file is in the way: check the path",
    errno.ENAMETOOLONG: "the path is too long",
}


class UsageProblem(CryptolakeError):
    """Bad input caught by a command itself (exit 2), as opposed to a failure while working."""


def describe(exc: BaseException) -> tuple[str, int]:
    """``(one-line message, exit code)`` for an exception that reached the CLI's boundary."""
    if isinstance(exc, ConfigError):
        return one_line(f"configuration error: {exc}"), 2
    if isinstance(exc, UsageProblem):
        return one_line(str(exc)), 2
    if isinstance(exc, Interrupted):
        return one_line(f"interrupted: {exc}"), 128 + (exc.signum or 2)
    if isinstance(exc, CryptolakeError):
        return one_line(str(exc)), 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, OSError):
        return one_line(describe_os_error(exc)), 1
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller --interval range, fewer symbols, or a smaller batch", 1
    text = str(exc) or type(exc).__name__
    return one_line(
        f"unexpected {type(exc).__name__}: {text} (this is a bug: run again with --debug "
        "and report the traceback)"
    ), 1


def describe_os_error(exc: OSError) -> str:
    """An OS error as ``<what happened>: <path>; <what to do>``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    hint = _OS_HINTS.get(exc.errno) if exc.errno is not None else None
    return f"{reason}{where}" + (f" ({hint})" if hint else "")


def one_line(text: str) -> str:
    """``text`` on one line (whitespace collapsed), cut to :data:`MAX_MESSAGE_CHARS`, redacted."""
    flat = " ".join(redact(text).split())
    if len(flat) > MAX_MESSAGE_CHARS:
        flat = flat[: MAX_MESSAGE_CHARS - 3] + "..."
    return flat


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, with secrets hidden (for ``--debug``)."""
    return redact("".join(traceback.format_exception(exc)))
