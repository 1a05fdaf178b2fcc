"""`manifest.json`: what made a collection, and the check that refuses a mismatched model."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clara.errors import IndexMismatchError
from indexing.durable import atomic_write_bytes

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: `clara.loader.DEFAULT_MODEL` (not imported: it pulls in mlx), what `--model` defaults to.
DEFAULT_MODEL = "smollm2-135m"
#: Other spellings accepted from `ClaraModel.manifest()` dicts.
_ALIASES = {
    "checkpoint_fingerprint": "fingerprint",
    "d": "hidden_size",
    "base_model_id": "base_model",
    "base": "base_model",
}


@dataclass
class Manifest:
    """The identity of the model whose vectors a collection holds (+ how it is stored)."""

    fingerprint: str  # ClaraModel.memory_fingerprint: base weights + the memories' tensors
    n_mem: int
    hidden_size: int  # d
    base_model: str = ""
    compression_rate: int | None = None
    checkpoint: str | None = None  # name or path of the checkpoint, for the fix-it message
    index_type: str = "auto"  # "flat" | "hnsw" | "ivf" | "auto"
    created: float = 0.0
    format_version: int = FORMAT_VERSION
    memory_dtype: str = "float16"
    extra: dict[str, Any] = field(default_factory=dict)  # other keys, kept verbatim
    # The loaded model's: older fingerprints whose collections it reads (never stored).
    accepts: tuple[str, ...] = ()
    # The collection folder it was read from, for the fix-it command (never stored).
    directory: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from a dict (e.g. `cm.manifest()`); unknown keys go to `extra`."""
        known = {f.name for f in fields(cls)} - {"extra", "directory"}
        values: dict[str, Any] = {}
        extra = dict(data.get("extra") or {})
        for key, value in data.items():
            name = _ALIASES.get(key, key)
            if name in known:
                values.setdefault(name, value)
            elif key != "extra":
                extra[key] = value
        missing = [k for k in ("fingerprint", "n_mem", "hidden_size") if values.get(k) is None]
        if missing:
            raise ValueError(f"an index manifest needs {', '.join(missing)}")
        values["n_mem"], values["hidden_size"] = int(values["n_mem"]), int(values["hidden_size"])
        values["accepts"] = tuple(values.get("accepts") or ())
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("accepts")
        out.pop("directory")
        out.update(out.pop("extra"))
        return out

    @property
    def dim(self) -> int:
        """Flattened vector width: n_mem * d."""
        return self.n_mem * self.hidden_size

    def _describe(self) -> str:
        base = f"base {self.base_model}, " if self.base_model else ""
        return f"{self.fingerprint} ({base}n_mem {self.n_mem}, d {self.hidden_size})"

    def check_matches(self, expected: Manifest, collection: str) -> None:
        """Raise IndexMismatchError unless `expected` (the loaded model) built this collection.

        The message names the command that re-encodes it with the loaded model (its index
        folder and collection included), and what to load instead when that is something
        else than what was loaded: not when both are the same base model's default adapters
        (no --checkpoint), which an upgrade of clara changed."""
        known = self.fingerprint in (expected.fingerprint, *expected.accepts)
        shape = (self.n_mem, self.hidden_size) == (expected.n_mem, expected.hidden_size)
        if known and shape:
            return
        fix = f"re-index with `{self.rebuild_command(expected, collection)}` (it encodes with "
        fix += "the model loaded now)"
        defaults = not self.checkpoint and not expected.checkpoint
        if defaults and self.base_model and self.base_model == expected.base_model:
            was, now = self.extra.get("base_fingerprint"), expected.extra.get("base_fingerprint")
            if was and now and was != now:  # the same name, other weights
                why = f"other weights of {self.base_model} (base fingerprint {was}, now {now})"
            else:  # the adapters loaded without --checkpoint changed: clara was upgraded
                why = "the default adapters of an earlier clara, which this one no longer has"
            raise IndexMismatchError(
                f"index '{collection}' was built with checkpoint {self._describe()}: {why}, "
                f"but the loaded model is {expected._describe()}; {fix}"
            )
        if self.checkpoint:
            built = f"--checkpoint {shlex.quote(self.checkpoint)}"
        elif self.base_model:  # no --checkpoint then: the model's default adapters
            built = f"--model {shlex.quote(self.base_model)} without --checkpoint"
        else:
            built = f"the checkpoint whose fingerprint is {self.fingerprint}"
        raise IndexMismatchError(
            f"index '{collection}' was built with checkpoint {self._describe()}, but the "
            f"loaded model is {expected._describe()}; {fix}, or load what built it: {built}"
        )

    def rebuild_command(self, expected: Manifest, collection: str) -> str:
        """`clara-index rebuild --recompress` of this collection with the model `expected`
        describes (its --model and --checkpoint, where they are not the defaults)."""
        words = ["clara-index", "rebuild", "--recompress"]
        if self.directory is not None:  # read from disk: always known then
            words += ["--index", str(self.directory.parent)]
        words += ["--collection", collection]
        if expected.base_model and expected.base_model != DEFAULT_MODEL:
            words += ["--model", expected.base_model]
        if expected.checkpoint:
            words += ["--checkpoint", expected.checkpoint]
        return shlex.join(words)


def read_manifest(directory: Path) -> Manifest:
    data = json.loads((directory / MANIFEST).read_text())
    manifest = Manifest.from_dict(data)
    manifest.directory = directory
    if manifest.format_version > FORMAT_VERSION:
        raise IndexMismatchError(
            f"index '{directory.name}' uses format {manifest.format_version}, newer than this "
            f"clara understands ({FORMAT_VERSION}); upgrade clara"
        )
    return manifest


def write_manifest(directory: Path, manifest: Manifest) -> None:
    if not manifest.created:
        manifest.created = time.time()
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(directory / MANIFEST, text.encode())
