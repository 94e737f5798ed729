"""The steerscope errors a user can act on.

`InputError` marks bad input (an argument, a file, a config value): its message names what was
wrong and what is valid, so the CLI prints it as one line and exits 2 instead of a traceback.
It is a `ValueError`, so code that catches `ValueError` keeps working.
"""


class InputError(ValueError):
    """Bad input to steerscope, named in one line: what was wrong and what is valid."""
