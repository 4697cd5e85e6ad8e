"""The repository root and paths relative to it.

Parameters name files relative to the repository root (``reports/h200``, ``virnucpro_kernel/data/...``), and
pages show paths that way, so a page does not depend on where the repository was cloned.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root(start=None) -> Path:
    """The nearest folder holding ``pyproject.toml`` and ``notebooks/``, walking up from ``start`` (default: the
    working directory), else from this package's folder."""
    candidates = [Path(start or os.getcwd()).resolve(), Path(__file__).resolve().parent]
    for origin in candidates:
        for folder in (origin, *origin.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
                return folder
    raise FileNotFoundError(f"no repository root (a folder with pyproject.toml and notebooks/) above {candidates[0]}")


def repo_path(path, root=None) -> Path:
    """``path`` as given when absolute, else relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root(root) / path


def display_path(path, root=None) -> str:
    """``path`` relative to the repository root when inside it, else as given."""
    if not path:
        return ""
    try:
        return Path(path).resolve().relative_to(repo_root(root)).as_posix()
    except (ValueError, FileNotFoundError):
        return str(path)
