"""Directories that hold an emulator's log file and data."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


class WorkDir:
    """The given directory, or a fresh temporary one that ``cleanup()`` removes.

    A directory the caller passed in is kept, so its logs can be read after a run.
    """

    def __init__(self, prefix: str, path: Path | None = None) -> None:
        self._owned = path is None
        self.path = Path(tempfile.mkdtemp(prefix=prefix)) if path is None else Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)
