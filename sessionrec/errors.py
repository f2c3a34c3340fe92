"""The project's error base: anything raised as a SessionrecError is a user-facing message."""


class SessionrecError(Exception):
    """A problem the user can act on; the message names the file, tensor or value involved."""


# What the CLI turns into one readable line instead of a traceback.
USER_ERRORS = (SessionrecError, FileNotFoundError, PermissionError)
