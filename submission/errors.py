"""The one error type the CLI turns into a one-line message and exit code 2."""


class HarnessError(Exception):
    """Bad input or an impossible request: the message names the file or value and the problem."""
