"""Folio: private, offline, long-context chat with local language models."""

__version__ = "0.1.0"
