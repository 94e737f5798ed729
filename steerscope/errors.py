"""`InputError`: what steerscope raises when the user's input is wrong (a data file, a record, a
setting, an output folder), as opposed to a bug. The CLI prints it as one line and exits with 2."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, with a one-line message naming what was wrong and what is valid."""
