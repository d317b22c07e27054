"""Exceptions raised by the library. Only the CLI turns them into messages and exit codes."""


class DyncpError(Exception):
    """Base class of every error dyncp raises on purpose."""


class ConfigError(DyncpError, ValueError):
    """A configuration key is unknown, or its value is invalid. The message names the key."""


class CheckpointError(DyncpError):
    """A checkpoint file is missing, truncated, of the wrong format/version, or unsafe."""


class AudioError(DyncpError, ValueError):
    """Audio input is unusable: wrong shape, sample rate, NaN/Inf, empty or unreadable file."""


class DataError(DyncpError):
    """A dataset folder is missing, empty, or its noisy/clean files do not pair up."""


class OutputError(DyncpError):
    """An output cannot be written: the file exists (and overwriting was not asked for), the
    folder is not writable, or a path names a file where a folder is needed."""


class DyncpWarning(UserWarning):
    """Something the user must hear about but that does not stop the work: files a folder walk
    skipped, samples that would clip, a metric that could not be computed for a file."""


class BudgetError(DyncpError, ValueError):
    """A run-time budget is given to a model without one, or lies outside the feasible range
    (the message states the range in Φ and in MMAC/s)."""
