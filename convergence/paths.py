"""Where the service finds what ships with it.

The pipeline configs are installed with the package as `convergence.configs` (pyproject maps the repository's
`configs/` there, for editable and wheel installs alike); `CONFIGS_DIR` points elsewhere. Local state
(`.state/`: the dev keyring, emulator data) lives in the working directory the service is started from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def bundled_configs_dir() -> Path:
    """The directory of the configs installed with the package."""
    spec = importlib.util.find_spec("convergence.configs")
    if spec is None or not spec.origin:
        raise RuntimeError("convergence.configs is not installed: reinstall the package or set CONFIGS_DIR")
    return Path(spec.origin).parent


def local_state_dir() -> Path:
    return Path.cwd() / ".state"
