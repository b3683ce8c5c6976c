"""Errors a user can cause: the CLI prints their message as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence.

    ``exit_code`` is the CLI's exit status for it: 2 (a usage error) unless a subclass says otherwise.
    """

    exit_code = 2
