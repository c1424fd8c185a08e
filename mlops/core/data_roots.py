"""Where data files named at run time may come from, and how large they may be.

A path from an event, a deployment parameter or `--data` is resolved (symlinks followed, `..` folded)
and must land inside a data root; anything else is refused before it is opened, with a message that
names the rule. The roots are the config's `data_roots` plus MLOPS_DATA_ROOTS (default, when neither
names any: the config file's folder), the config's own file source's folder, the state folder's
inbox, and the folder where the monitor writes this model's retraining files. The rest of the state
folder (stores, secrets, logs) is never data, even when a root contains it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlops.core.config import FileSource, PipelineConfig
from mlops.core.errors import DataError
from mlops.core.names import slug
from mlops.core.settings import Settings


class DataPathRefused(DataError):
    """A data path outside the data roots, not a regular file, or over the size cap."""


def _resolve(path: str | Path, base: Path | None = None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return p.resolve()  # follows symlinks; a missing tail is kept as written


@dataclass(frozen=True)
class DataRoots:
    """The folders data may be read from; `state_dir` is not data except for the roots inside it."""

    roots: tuple[Path, ...]
    state_dir: Path | None = None

    @classmethod
    def of(cls, roots: Iterable[str | Path], state_dir: str | Path | None = None) -> DataRoots:
        unique = dict.fromkeys(_resolve(r) for r in roots)
        return cls(tuple(unique), _resolve(state_dir) if state_dir is not None else None)

    def listing(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "none"

    def confine(self, path: str | Path) -> Path:
        """The resolved path when it lies inside a data root; DataPathRefused naming the rule otherwise.

        Nothing is opened or stat'ed before the check, so a refusal says nothing about whether the file exists.
        """
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in str(path)):
            raise DataPathRefused(f"{str(path)!r}: refused: a data path may not hold a control character (NUL, "
                                  "newline, tab); name the file as it is on disk")
        resolved = _resolve(path)
        shown = str(path)
        if os.path.abspath(Path(path).expanduser()) != str(resolved):
            shown += f" (it resolves to {resolved})"
        inside = [r for r in self.roots if resolved.is_relative_to(r)]
        if not inside:
            raise DataPathRefused(
                f"{shown}: refused: a data file must resolve, symlinks followed, inside a data root "
                f"({self.listing()}); move it into one or add its folder to data_roots in the config or to "
                "MLOPS_DATA_ROOTS")
        state = self.state_dir
        if state is not None and resolved.is_relative_to(state) and not any(r.is_relative_to(state) for r in inside):
            raise DataPathRefused(
                f"{shown}: refused: the state folder {state} holds stores and secrets, not data; drop data files "
                f"in its inbox {state / 'inbox'} instead")
        return resolved

    def confine_file(self, path: Path) -> Path:
        """`confine`, and the target must be a regular file (not a device, pipe or socket)."""
        resolved = self.confine(path)
        try:
            mode = resolved.stat().st_mode
        except OSError:
            return resolved  # missing: the reader says "not found"
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DataPathRefused(f"{path}: refused: not a regular file or folder")
        return resolved


def data_roots(cfg: PipelineConfig, settings: Settings) -> DataRoots:
    """The data roots for a run of `cfg` under `settings` (see the module docstring)."""
    base = cfg.folder or Path.cwd()
    named = [_resolve(r, base) for r in cfg.data_roots] + [_resolve(r) for r in settings.data_roots]
    roots = named or ([cfg.folder] if cfg.folder is not None else [])
    if isinstance(cfg.source, FileSource):
        own = _resolve(cfg.source.path)
        roots.append(own if own.is_dir() else own.parent)
    # the monitor's retraining files (mlops.monitoring.run.MonitorPaths.training) are the project's own data
    roots += [settings.inbox_dir, settings.state_dir / "monitor" / slug(cfg.registry.model_name) / "training"]
    return DataRoots.of(roots, settings.state_dir)


def confine_output(path: str | Path, cfg: PipelineConfig, settings: Settings, *, new_file: bool = False) -> Path:
    """Where a run started by an event, a deployment or the UI may write: inside the state folder's
    `scores` folder or a data root outside the state folder (never the stores, the inbox or the monitor's
    retraining files, which later runs read as data). With `new_file`, an existing file is not overwritten.
    """
    resolved = _resolve(path)
    state = _resolve(settings.state_dir)
    allowed = [state / "scores"] + [r for r in data_roots(cfg, settings).roots if not r.is_relative_to(state)]
    inside_state = resolved.is_relative_to(state) and not resolved.is_relative_to(state / "scores")
    if inside_state or not any(resolved.is_relative_to(r) for r in allowed):
        raise DataPathRefused(
            f"{path}: refused: a run's output must resolve, symlinks followed, inside {state / 'scores'} or a data "
            f"root outside the state folder ({', '.join(str(r) for r in allowed[1:]) or 'none'})")
    if new_file and resolved.exists():
        raise DataPathRefused(f"{path}: refused: the file exists and a run does not overwrite it; name a new file")
    return resolved


def check_size(path: Path, files: list[Path], max_bytes: int | None) -> None:
    """Refuse a file (or a folder's files, together) over `max_bytes`, before reading any of it."""
    if max_bytes is None:
        return
    size = sum(f.stat().st_size for f in files)
    if size > max_bytes:
        raise DataPathRefused(
            f"{path}: refused: {size:,} bytes is over the cap of {max_bytes:,} bytes (source.max_bytes); split "
            "the data or raise the cap")
