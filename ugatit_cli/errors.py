"""Errors a user can cause: the CLI prints their message as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
