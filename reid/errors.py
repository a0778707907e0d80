"""The one exception type users see.

Every failure caused by the user's input (a missing file, a bad option, offline without weights)
is raised as :class:`CrosscamError` with a single-line message that names the file or option and
says what to do. The CLI prints it as ``error: <message>`` and exits with status 2; anything
else escaping is a bug and keeps its traceback.
"""


class CrosscamError(Exception):
    """A user-facing error: one line, naming what was wrong and what to do about it.

    >>> raise CrosscamError("weights/market_bot_R50.pth: not found; run `crosscam weights download market_bot_R50`")
    Traceback (most recent call last):
    ...
    reid.errors.CrosscamError: weights/market_bot_R50.pth: not found; run `crosscam weights download market_bot_R50`
    """
