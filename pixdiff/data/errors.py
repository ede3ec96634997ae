"""The data layer's error, in a module of its own so that every data module can raise it."""


class DataError(ValueError):
    """Bad training data or a bad cache; the message names the offending path."""
