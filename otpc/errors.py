"""The error type for bad input data."""


class InputError(ValueError):
    """Bad input data; the message names the file, row or key, and the fix where there is one."""
