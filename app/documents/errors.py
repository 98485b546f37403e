"""Why a file cannot be attached: one FolioError subclass per case, each message one line."""

from app.engine.errors import FolioError


class DocumentError(FolioError):
    """The file is missing or unreadable; subclasses name the specific reason."""


class UnsupportedDocument(DocumentError):
    pass


class EmptyDocument(DocumentError):
    pass


class DocumentTooLarge(DocumentError):
    pass


class EncryptedPDF(DocumentError):
    pass


class CorruptPDF(DocumentError):
    pass


class ImageOnlyPDF(DocumentError):
    pass


class DocumentTooLong(DocumentError):
    """The whole document was asked for (`--whole`) and it does not fit; the message has the numbers."""
