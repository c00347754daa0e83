"""Version of the DataFusion instrumentation (the package version)."""

from __future__ import annotations

__version__ = "0.1.0"
