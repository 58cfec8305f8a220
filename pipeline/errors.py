"""The one exception type a user can meet, and its audio-specific flavour."""


class SemisepError(Exception):
    """A problem the user can fix: the message names the file or setting and what to do."""


class AudioError(SemisepError):
    """A source file that cannot be used. ``path`` and ``reason`` are kept for manifests."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (AudioError, (self.path, self.reason))


class StoreError(SemisepError):
    """Writing to a store (shards, manifest, checkpoints) failed: a full disk, no permission, a lost
    mount. Not the fault of any one source file, so ingestion stops instead of blaming one."""

    def __init__(self, location, reason: str):
        self.location = str(location)
        self.reason = reason
        super().__init__(f"{self.location}: {reason}")

    def __reduce__(self):  # crosses Ray task boundaries intact
        return (StoreError, (self.location, self.reason))
