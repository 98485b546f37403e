"""Errors with a message a person can act on; the UI and CLI show `str(e)`, never a traceback."""


class FolioError(Exception):
    """Base for every error whose message is meant for the user."""


class ModelError(FolioError):
    """The model folder is missing, incomplete, malformed or unsupported."""


class ContextOverflow(FolioError):
    def __init__(self, tokens: int, limit: int, what: str = "The conversation"):
        self.tokens, self.limit, self.over = tokens, limit, tokens - limit
        super().__init__(
            f"{what} is {tokens:,} tokens, {self.over:,} over the context limit of {limit:,}. "
            "Shorten it, start a new chat, or raise the context length in Settings."
        )


class OutOfMemory(FolioError):
    """Weights plus KV cache at the requested context would not fit in memory."""


class Cancelled(FolioError):
    def __init__(self):
        super().__init__("Stopped.")
