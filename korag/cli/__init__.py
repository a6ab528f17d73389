"""The `korag` command (console script ``korag.cli:main``): thin commands over korag's services."""

from korag.cli.main import main

__all__ = ["main"]
