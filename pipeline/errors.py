"""The one exception type a user can meet, and its audio-specific flavour."""


class SemisepError(Exception):
    """A problem the user can fix: the message names the file or setting and what to do."""


class AudioError(SemisepError):
    """A source file that cannot be used. ``path`` and ``reason`` are kept for manifests."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
