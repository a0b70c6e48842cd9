"""The ``cryptolake`` group: global options, the one-line error boundary, the entry point."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from cryptolake._version import __version__
from cryptolake.cli.failures import describe, one_line, redacted_traceback
from cryptolake.redact import RedactingFilter

if TYPE_CHECKING:
    pass


class CryptolakeGroup(click.Group):
    """The CLI's error boundary: any exception becomes one redacted line and an exit code
    (:mod:`cryptolake.cli.failures`); ``--debug`` adds the traceback."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's options: one line, like every other error
            raise _usage(exc) from None
        except (click.exceptions.Exit, click.Abort, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:
            # `cryptolake sql ... | head`: the reader has gone. Nothing more to say (as cat and
            # grep say nothing); stdout goes to /dev/null so that closing it raises no second error.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(128 + 13) from None  # 141: killed by SIGPIPE, as the shell says
        except BaseException as exc:  # noqa: BLE001 - this is the boundary
            message, code = describe(exc)
            if ctx.obj and ctx.obj.get("debug"):
                click.echo(redacted_traceback(exc), err=True, nl=False)
            raise _Failure(message, exit_code=code) from None


def _usage(exc: click.UsageError) -> click.ClickException:
    """Click's usage error as one line (exit 2), pointing at the command's help; a group called
    without a command still shows its help, as click does."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    where = exc.ctx.command_path if exc.ctx is not None else "cryptolake"
    return _Failure(f"{exc.format_message()} (see `{where} --help`)", exit_code=exc.exit_code)


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; per instance here

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {one_line(self.format_message())}", err=True)


@click.group(cls=CryptolakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cryptolake")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="CRYPTOLAKE_CONFIG",
    help="TOML configuration file (default: ./config.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, debug: bool) -> None:
    """cryptolake: keep a complete, trustworthy history of crypto candles in a Parquet lake.

    Example:

        cryptolake collect --symbols BTC,ETH --since 2024-01-01
    """
    ctx.ensure_object(dict)
    ctx.obj.update(config_file=config_file, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # psycopg warns about cleanups after a lost connection; the loader reports the loss itself.
    logging.getLogger("psycopg").setLevel(logging.DEBUG if debug else logging.ERROR)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cryptolake")
