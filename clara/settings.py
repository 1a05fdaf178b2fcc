"""What both HTTP services load: the base model, the CLaRa checkpoint and the index root."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clara.paths import index_root

log = logging.getLogger("clara")


@dataclass
class ModelSettings:
    model: str = "smollm2-135m"
    checkpoint: str | None = None
    dtype: str | None = "auto"
    index_root: str | None = None  # default: $CLARA_HOME/indexes
    query_precision: str = "float32"  # ClaraModel.set_query_precision
    #: the compressor merged into packed weights (`ClaraModel.pack_base_weights`): faster
    #: compression for ~0.9 GB more with the default model; the indexing service's work
    pack_compressor: bool = False

    @property
    def root(self) -> Path:
        return index_root(self.index_root)

    def check(self) -> int:
        """What can be known wrong before the model loads, without loading it: a model name
        that names nothing here, a checkpoint folder that is not one. Servers check it before
        they bind their port (they used to say they were listening, then end). Returns the
        checkpoint's doc_max_tokens, for settings that depend on its chunks."""
        from clara.checkpoint import checkpoint_doc_max_tokens
        from clara.loader import check_model_name

        check_model_name(self.model)
        return checkpoint_doc_max_tokens(self.model, self.checkpoint)

    def load(self, warn: Callable[[str], None] | None = None):
        """The base model with its CLaRa checkpoint (`load_clara`), its base weights packed;
        call it on the worker thread. `warn` says what could not be had (default: the log)."""
        import mlx.core as mx

        from clara import cpu
        from clara.checkpoint import load_clara

        log.info("loading %s%s", self.model, f" + {self.checkpoint}" if self.checkpoint else "")
        cm = load_clara(self.model, self.checkpoint, dtype=self.dtype)
        if mx.default_device() == mx.cpu:  # after loading: with the kernels it built
            log.info("CPU matmuls: %s", cpu.describe())
        cm.pack_base_weights(compressor=self.pack_compressor)  # no per-call weight packing
        if cm.set_query_precision(self.query_precision) != self.query_precision:
            (warn or log.warning)(
                f"--query-precision {self.query_precision}: not on this machine (it needs MLX "
                "on a Linux CPU with AMX tiles or AVX-512 BF16, and packed weights); query "
                "encodings stay float32"
            )
        return cm
