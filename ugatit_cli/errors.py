"""Errors a user can cause: the CLI prints their message as one line, never a traceback."""


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
