"""Errors a user can cause: the CLI prints their message as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class UsageError(UserError):
    """The command line asks for something that cannot be done (a missing source, an occupied output):
    the CLI exits with status 2, as for a malformed option."""
