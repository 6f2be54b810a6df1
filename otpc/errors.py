"""otpc's errors: each says what is wrong (the file, row, key or model) and how to fix it.

Commands (``otpc`` and the pipeline's stages, see ``otpc.commands``) print an ``OtpcError`` as
one line, without a traceback; anything else is a bug and keeps its traceback.
"""


class OtpcError(Exception):
    """A problem the user can fix; the message names it and says how."""


class InputError(OtpcError, ValueError):
    """Bad input data; the message names the file, row or key, and the fix where there is one."""


class ParamsError(OtpcError, ValueError):
    """``params.yaml`` is invalid; the message lists every problem with its dotted key."""


class ModelError(OtpcError, RuntimeError):
    """A model cannot be found or loaded; the message says how to fetch it."""


class NotReady(InputError):
    """Results cannot be logged yet: an output is missing or is not the one dvc.lock records."""


class TrackingError(OtpcError):
    """The tracking store (MLflow) could not be reached or refused the run."""
