"""Errors a user can cause: the CLI prints their message as one line, never a traceback.

The exit-code rule, everywhere: **2** when nothing could start (bad options, a MODEL or DATA_DIR that cannot be
found or read, a missing optional package): raise :class:`UserError`. **1** when the command started and some
of its inputs failed while the rest were done (an unreadable image among many, an upload refused after the
export was written): list them, or raise :class:`ProcessingError` for the part that failed. 0 when everything
asked for was done. This module stays at ``ugatit_cli.errors`` (not ``core/``): plugins and scripts import it.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence.

    ``exit_code`` is the CLI's exit status for it: 2 (a usage error: the command cannot be carried out as
    asked) unless a subclass says otherwise.
    """

    exit_code = 2


class ProcessingError(UserError):
    """The command was valid but part of the work failed: an input file turned out unusable, an upload was
    refused. Exit status 1, as when some of several inputs failed."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
