"""The one exception type that the toolkit raises for bad user input."""


class ToolkitError(Exception):
    """A user-facing error.

    The message names the file, layer or tensor, the value received and what to
    do about it. The CLI prints it without a traceback and exits with status 1.
    """
