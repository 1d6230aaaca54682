"""User-facing errors: each carries one line that says what was expected and where."""


class NCError(Exception):
    """A problem with the user's input (config, model file, data). Shown as one line, no traceback."""


class ConfigError(NCError):
    """A config file that is missing, unreadable, or has a wrong key, type or value."""


class ModelError(NCError):
    """A model file that cannot be loaded or does not match the config."""


class DataError(NCError):
    """A dataset that cannot be read or does not match the config."""


class RunFolderError(NCError):
    """A run folder that is missing or incomplete (report, resume)."""


class MitigationError(NCError):
    """A mitigation that cannot run: no flagged label, a missing trigger, an unknown method or option."""


class ComputeError(NCError):
    """A compute backend that cannot start: Ray not installed, no cluster at the address, no workers."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty), for one-line
    errors that quote a library's reason."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
