"""One exception type for user-facing errors, so the CLI can print one line and exit non-zero."""


class BarkitError(Exception):
    """A problem with the user's input: the message names the file or key and the problem."""
