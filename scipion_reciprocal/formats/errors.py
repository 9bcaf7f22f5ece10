"""Errors raised when a STAR or MRC file cannot be read or written."""


class FormatError(ValueError):
    """A file that is missing, malformed or inconsistent.

    Parameters
    ----------
    path : str or os.PathLike
        The file concerned.
    reason : str
        What is wrong with it, in one line.

    The message is ``"<path>: <reason>"``; ``path`` and ``reason`` are kept as
    attributes. Called with a single argument, that argument is used as the
    whole message (it should already name the file).
    """

    def __init__(self, path, reason=None):
        if reason is None:
            self.path, self.reason = None, str(path)
            message = str(path)
        else:
            self.path, self.reason = str(path), str(reason)
            message = f'{path}: {reason}'
        super().__init__(message)


class StarError(FormatError):
    """A STAR file that cannot be read or lacks what is asked of it."""


class MrcError(FormatError):
    """An MRC file whose header or size is not valid."""
