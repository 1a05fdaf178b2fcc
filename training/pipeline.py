"""One call that trains a stage: load the model (fresh, from the previous stage, or to resume),
prepare the stage, run the loop, return the final checkpoint. Used by `clara-train` and tests.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import mlx.core as mx

from clara import _blas
from clara.checkpoint import load_clara, read_checkpoint_config
from clara.errors import CheckpointError, ClaraError
from clara.loader import DEFAULT_MODEL, BaseModel, load_base
from clara.model import ClaraConfig, ClaraModel
from training.stages import StageConfig, make_stage, set_trainable
from training.trainer import (
    STATE_FILE,
    TrainConfig,
    Trainer,
    base_of,
    checkpoints,
    config_dict,
    enable_grad_checkpoint,
)


def load_for_training(
    model: str | os.PathLike | BaseModel = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    *,
    dtype: str | None = "auto",
    config: ClaraConfig | None = None,
) -> ClaraModel:
    """`load_clara`, except that a full fine-tuning checkpoint brings its own base weights,
    and no checkpoint means fresh adapters (never the shipped defaults)."""
    base = base_of(checkpoint)
    if base is not None:
        model = base
    return load_clara(
        model, checkpoint if checkpoint is not None else "none", dtype=dtype, config=config
    )


def _is_quantized(cm: ClaraModel) -> bool:
    return "quantization" in cm.info.config and cm.info.extras.get("dtype") in (None, "stored")


def fit_center(cm: ClaraModel, examples: Sequence, n: int = 256) -> None:
    """Fit a `center_memory` model's center on the first `n` documents of the stage's data."""
    docs = [d for e in examples for d in e.docs][:n]
    if not docs:
        raise ClaraError(
            "--center-memory: the center is fitted on documents when training starts; start "
            "with the pretrain or instruct stage (joint reuses the center of its --init-from)"
        )
    cm.fit_memory_center(docs)


def warn_cut_documents(cm: ClaraModel, records: Sequence) -> None:
    """Say when documents are longer than the compressor reads (`doc_max_tokens`): their
    ends are cut, and a question on them may ask what the memory never saw."""
    docs = [r.doc for r in records if hasattr(r, "doc")]  # PretrainRecord, QARecord
    docs = list(dict.fromkeys(docs + [d for r in records for d in getattr(r, "docs", ())]))
    lengths = [len(ids) for ids in cm.tokenize(docs, cut=False)] if docs else []
    limit = cm.config.doc_max_tokens
    if (cut := sum(n > limit for n in lengths)) == 0:
        return
    print(
        f"warning: {cut} of {len(docs)} documents are longer than the compressor reads "
        f"({limit} tokens; the longest {max(lengths)}): their ends are cut. Write the data "
        f"with `clara-train synth --doc-max-tokens {limit}`, or train a new model with "
        "--doc-max-tokens set to their length",
        file=sys.stderr,
    )


def local_ranks(group: mx.distributed.Group) -> int:
    """Ranks of `group` on this machine: the ring backend's host file lists each rank's
    address (`mlx.launch -n 2` puts both on 127.0.0.1); without one, every rank is local."""
    path = os.environ.get("MLX_HOSTFILE")
    if group.size() == 1 or not path:
        return group.size()
    try:
        hosts = [str(h[0]).rsplit(":", 1)[0] for h in json.loads(Path(path).read_text())]
        mine = hosts[group.rank()]
    except (OSError, ValueError, IndexError, TypeError):
        return group.size()
    return max(1, hosts.count(mine))


def check_out(
    out: str | os.PathLike, resume: bool, init_from: str | os.PathLike | None = None
) -> Path | None:
    """The checkpoint a run into `out` resumes from (None: a new run), after checking that
    `out` holds one (`resume`) or none (a new run would mix with the old), and not the run it
    starts from. Cheap: the launcher of `--ranks` checks before starting any rank."""
    found = checkpoints(out)
    if resume:
        if not found:
            raise ClaraError(
                f"--resume: no checkpoint in {out} to resume from; run without --resume"
            )
        done = read_checkpoint_config(found[-1]).get("training", {})
        if found[-1].name == "final" and done.get("step") == done.get("total_steps"):
            raise ClaraError(
                f"{found[-1]} is already complete: nothing to resume (to train on, start a run "
                f"from it: --init-from {found[-1]} --out ANOTHER_FOLDER)"
            )
        return found[-1]
    if found:
        raise ClaraError(
            f"{out} already holds a run ({', '.join(p.name for p in found)}): "
            "continue it with --resume, or give another --out (or remove that folder)"
        )
    where = Path(out).resolve()
    if init_from is not None and where in (
        Path(init_from).resolve(),
        *Path(init_from).resolve().parents,
    ):
        raise ClaraError(
            f"--out {out} holds --init-from {init_from}: this run would overwrite what it "
            "starts from; give another --out"
        )
    return None


def build_trainer(
    records: Sequence,
    config: TrainConfig,
    *,
    model: str | os.PathLike | BaseModel = DEFAULT_MODEL,
    init_from: str | os.PathLike | None = None,
    clara_config: ClaraConfig | None = None,
    stage_config: StageConfig | None = None,
    resume: bool = False,
    dtype: str | None = "auto",
    group: mx.distributed.Group | None = None,
) -> Path:
    """Load the model, prepare the stage; returns `(trainer, checkpoint to resume or None)`."""
    if group is None:
        group = mx.distributed.init()
    _blas.for_training(local_ranks(group))
    resume_from = check_out(config.out, resume, init_from)
    if resume_from is not None:
        done = read_checkpoint_config(resume_from).get("training", {})
        check_same_run(resume_from, config)
        if group.rank() == 0:
            print(
                f"resuming from {resume_from} (step {done.get('step')} of "
                f"{done.get('total_steps')})", file=sys.stderr,
            )  # fmt: skip
    source = resume_from or init_from
    if isinstance(model, BaseModel) and base_of(source) is not None:
        model = load_base(base_of(source), dtype=dtype)
    cm = load_for_training(model, source, dtype=dtype, config=clara_config)
    if cm.config.reference:
        raise CheckpointError(
            f"{source} is an imported checkpoint: it reads prompts laid out as its "
            "reference's, and clara-train trains clara's own layout. Serve and evaluate it as "
            "it is; to train, start from its base model (leave out --init-from)"
        )

    stage = make_stage(config.stage, cm, stage_config)
    if config.full and not stage.allows_full:
        raise ClaraError(
            f"--full is not available for the {config.stage} stage: the base weights are the "
            "frozen compressor's too; it trains the query and generator adapters"
        )
    if not config.full and not stage.allows_lora:
        raise ClaraError(f"the {config.stage} stage trains base weights: add --full")
    if config.full and _is_quantized(cm):
        raise ClaraError("--full needs float weights: load the model with --dtype float32")
    lead = group.rank() == 0
    if lead:  # (under --quiet too: a warning, not progress)
        warn_cut_documents(cm, records)
    examples = stage.build(records)
    if resume_from is None:
        stage.initialize(cm, config.seed)
    if not cm.memory_centered:
        fit_center(cm, examples)
    set_trainable(cm, stage.adapters, stage.memory_tokens, config.full)
    if config.grad_checkpoint:
        enable_grad_checkpoint(cm)
    from clara_cli.common import progress

    stage.prepare(
        examples,
        progress=lambda it, n: progress(it, n, "compress docs", quiet=config.quiet or not lead),
    )
    _blas.for_training(local_ranks(group))  # compressing (`prepare`) set prefill's threads
    return Trainer(cm, stage, examples, config, group), resume_from


#: what a resumed run must share with the one that wrote its checkpoint (the rest, such as
#: logging, checkpoint cadence and speed settings, may change between the two)
SAME_RUN = ("stage", "lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup",
            "min_lr_ratio", "clip", "betas", "seed", "full", "length_buckets")  # fmt: skip


def check_same_run(checkpoint: Path, config: TrainConfig) -> None:
    """Refuse to resume `checkpoint` with other data or options than the run that wrote it:
    the steps after it would belong to another run."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    before = state.get("config", {})
    now = config_dict(config)
    changed = [
        (k, before[k], now.get(k)) for k in SAME_RUN if k in before and before[k] != now.get(k)
    ]
    pairs = {
        key: ((before.get("extra") or {}).get(key), (now.get("extra") or {}).get(key))
        for key in ("data", "data_sha256")  # the file, and what it held (regenerated since?)
    }
    moved_only = None not in pairs["data_sha256"] and len(set(pairs["data_sha256"])) == 1
    for key, pair in pairs.items():  # (the same bytes elsewhere: a run moved to another
        if None not in pair and pair[0] != pair[1] and not (key == "data" and moved_only):
            changed.append((key, *pair))  # machine resumes: an air-gapped audit)
    if changed:
        said = ", ".join(f"{k} {_shown(old)} -> {_shown(new)}" for k, old, new in changed)
        raise ClaraError(
            f"--resume: {checkpoint} belongs to a run with other settings ({said}); resume "
            "with that run's data and options, or start a new run in another --out"
        )


def _shown(value: object) -> str:
    """A setting as `check_same_run` names it: an option left out is None in the config
    ("lr None -> 0.5" read as a bug)."""
    return "(its default)" if value is None else repr(value)


def train(records: Sequence, config: TrainConfig, **kwargs) -> Path:
    """Train `config.stage` on `records` (see `build_trainer`); returns the final checkpoint."""
    trainer, resume_from = build_trainer(records, config, **kwargs)
    return trainer.run(resume_from)
