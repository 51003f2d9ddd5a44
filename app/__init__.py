"""Squeeze: a self-hosted model compression service (the HTTP half; never imports torch)."""

__version__ = "0.1.0"
