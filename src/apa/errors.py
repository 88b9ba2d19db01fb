"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class ApaError(Exception):
    """A problem with the user's input or environment, stated with what to do about it.

    The message must name the offending input (file, line, field) and the fix; the CLI prints
    it as ``error: <message>`` and exits with status 2.
    """
