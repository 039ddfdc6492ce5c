"""User-facing errors: the CLI prints these as one sentence and exits 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user: a file, a field or a flag. The message names it."""


class ConfigError(UserError):
    pass


class DatasetError(UserError):
    pass


class LeakError(RuntimeError):
    """The held-out signer's data was read before the final evaluation: a protocol bug."""
