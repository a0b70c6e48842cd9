"""Secrets never shown: what counts as a secret, and how it is hidden in text and logs.

Two mechanisms, both applied to every error message and log line the CLI prints:

- **Known values.** :func:`register_secret` records a value (an API key, a DSN and its
  password) the moment settings are resolved; :func:`redact` replaces every occurrence of it
  with ``***``, whatever text it turns up in (a driver's error message, a traceback, a URL).
- **Shapes.** Passwords inside connection strings are hidden even when their value was never
  registered: ``scheme://user:PASSWORD@host`` and ``password=PASSWORD`` (libpq's key=value and
  URL-query forms). The parsing is by pattern, never ``urlsplit``, so a malformed DSN cannot
  raise while it is being hidden.

:class:`RedactingFilter` applies :func:`redact` to log records.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
#: Values shorter than this are not registered: masking "a" everywhere would garble text.
MIN_SECRET_LEN = 4

# scheme://user:PASSWORD@host: the password runs to the last "@" before the host (an unencoded
# "@" in it must not leave its tail readable).
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*:)(?P<pw>[^\s/?#]*)(?=@[^\s@/?#]*(?:[/?#\s]|$))"
)
# ?password=...& in a URL's query.
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)
# password=... in libpq's key=value form: a quoted value (with \' escapes) or everything up to
# the next unescaped space, quotes and backslashes included.
_KV_PASSWORD = re.compile(
    r"(?P<head>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|(?:\\.|[^\s\\])+)", re.IGNORECASE
)

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Hide ``value`` in everything :func:`redact` sees; for a connection string (a URL or
    ``key=value`` DSN) only its password is secret, so hosts and database names stay readable."""
    if not value:
        return
    passwords = {m.group("pw") for m in _URL_PASSWORD.finditer(value)}
    passwords |= {m.group("pw") for m in _QUERY_PASSWORD.finditer(value)}
    passwords |= {m.group("pw").strip("'") for m in _KV_PASSWORD.finditer(value)}
    # A password with an unencoded "@" is split differently by libpq: hide each part too.
    passwords |= {part for pw in passwords for part in pw.split("@")}
    is_dsn = "://" in value or re.search(r"\b(host|dbname|user|port)\s*=", value) is not None
    found = passwords if is_dsn else {value}
    with _lock:
        _secrets.update(s for s in found if len(s) >= MIN_SECRET_LEN)


def forget_secrets() -> None:
    """Forget every registered value (tests)."""
    with _lock:
        _secrets.clear()


def redact(text: str) -> str:
    """``text`` with registered secrets and connection-string passwords replaced by ``***``."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return _mask_shapes(text)


def _mask_shapes(text: str) -> str:
    for pattern in (_URL_PASSWORD, _QUERY_PASSWORD, _KV_PASSWORD):
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text


def redact_dsn(dsn: str) -> str:
    """A DSN with its password replaced by ``***`` (URL or key=value form; never raises)."""
    return _mask_shapes(dsn) if dsn else ""


class RedactingFilter(logging.Filter):
    """Hides secrets in log records: the message is rendered, redacted, and its args dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
