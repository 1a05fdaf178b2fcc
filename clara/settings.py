"""What both HTTP services load: the base model, the CLaRa checkpoint and the index root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clara.paths import index_root


@dataclass
class ModelSettings:
    model: str = "smollm2-135m"
    checkpoint: str | None = None
    dtype: str | None = "auto"
    index_root: str | None = None  # default: $CLARA_HOME/indexes

    @property
    def root(self) -> Path:
        return index_root(self.index_root)
