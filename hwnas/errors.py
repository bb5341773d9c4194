"""Errors that the CLI turns into one clear line and exit code 2."""


class HwnasError(Exception):
    """A user-facing error: bad input, missing file, impossible request.

    The CLI prints ``str(err)`` on one line and exits with code 2, no traceback.
    """


class ConfigError(HwnasError):
    """An invalid experiment or device file: names the file, the key path and what is allowed."""

    def __init__(self, path, key: str, message: str):
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)
