"""Errors the model manager shows as one line: offline, not found, disk full, damaged download."""

from app.engine.errors import FolioError


class HubError(FolioError):
    """Talking to the Hugging Face Hub failed; the message says why and what to do."""


class Offline(HubError):
    """The Hub cannot be reached, or Folio was told not to try."""


class DiskFull(HubError):
    """Not enough free disk space for the download."""


class IntegrityError(HubError):
    """A downloaded file does not match the Hub's size or hash; the bad copy was deleted."""


class Paused(HubError):
    def __init__(self, repo_id: str):
        super().__init__(f"Download of {repo_id} paused; resume it to continue where it stopped.")


class DownloadCancelled(HubError):
    def __init__(self, repo_id: str):
        super().__init__(f"Download of {repo_id} cancelled; its partial files were deleted.")
