"""The error every dataset problem raises: one line naming the config key, file, row and column."""


class DatasetError(ValueError):
    """A dataset that cannot be loaded; the message says which key to change."""
