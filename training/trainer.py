"""The training loop: Adam(0.9, 0.95), clip 1.0, warm-up + cosine, accumulation, resume, DDP.

Determinism is by construction: the example order is a function of (seed, epoch), dropout is
re-seeded from (seed, step, rank) every step, and a checkpoint stores the adapters (and, with
full fine-tuning, the base weights), the optimiser state and the step. Resuming from step s
therefore continues exactly as the uninterrupted run would have.

Data parallel (`mx.distributed`, e.g. `mlx.launch -n 2 ...`): every rank reads all records,
takes its slice of each global batch, and gradients are summed with `all_sum` (the losses are
already divided by the global token/document counts). Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from clara import _blas
from clara.checkpoint import read_weights, save_checkpoint
from clara.errors import ClaraError
from clara.loader import fingerprint_weights
from clara.model import ClaraModel
from clara.retrieval import recall_precision_at_k
from training import grads as G
from training.stages import RECALL_KS, Example, Stage
from training.stopping import Stopped, StopRequests

STEP_PREFIX = "step-"
FINAL = "final"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
BASE_DIR = "base"
METRICS_FILE = "metrics.jsonl"
DEFAULT_LR = {"pretrain": 1e-4, "instruct": 1e-4, "joint": 5e-6, "lm": 1e-3}


@dataclass
class TrainConfig:
    """How to train (the stage's loss knobs live in `StageConfig`)."""

    stage: str
    out: str
    lr: float | None = None  # None: the stage's reference default (DEFAULT_LR)
    epochs: float = 1.0
    max_steps: int | None = None  # optimiser steps; overrides epochs
    batch_size: int = 8  # examples per micro-batch on each rank
    grad_accum: int = 1
    warmup: float = 0.03  # fraction of the steps
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    save_every: int = 0  # steps between checkpoints (0: only the final one)
    keep_last: int = 0  # step checkpoints kept on disk, newest first (0: all); final always
    stop_after: int | None = None  # stop early with a checkpoint after this step (resume later)
    log_every: int = 10
    seed: int = 0
    full: bool = False
    grad_checkpoint: bool = False
    quiet: bool = False
    # Length-bucketed batches: each window of 16 global batches (of the seeded permutation) is
    # sorted by example length and cut into batches, whose order is shuffled: less padding.
    length_buckets: bool = False
    # Examples per forward/backward pass inside a micro-batch (None: all of it). The losses are
    # sums over the step's counts, so splitting changes nothing but speed: on a CPU, passes of
    # one example run faster per token than padded batches (smaller, cache-friendly matmuls).
    pass_size: int | None = None
    # On CPUs with bfloat16 products (AMX tiles or AVX-512 BF16): the products through the
    # frozen base weights (forward, and the backward to their inputs) run in bfloat16 with
    # float32 sums, as mixed-precision training does on GPUs; LoRA weights, gradients and the
    # optimizer stay float32. CLARA_BF16=off too.
    bf16_products: bool = True
    extra: dict = field(default_factory=dict)  # recorded in the checkpoint (data files, ...)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.stage]


def frozen_matrices(cm: ClaraModel) -> list[mx.array]:
    """The frozen matrices a LoRA training step multiplies by: each adapted layer's base
    weight and the output head (SmolLM2's tied input embedding)."""
    out = [m.base.weight for m in cm.lora_layers() if type(m.base) is nn.Linear]
    head = cm.head_weight()
    return out + ([head] if head is not None else [])


def lr_schedule(lr: float, total: int, warmup: float = 0.03, min_ratio: float = 0.1):
    """Linear warm-up over `warmup` of the steps, then cosine from `lr` to `min_ratio * lr`.
    (Not mlx's `join_schedules` of `linear_schedule` and `cosine_decay`: their warm-up starts
    at 0, so step 0 would not train, and the runs recorded here would not reproduce.)"""
    w = max(1, round(warmup * total))
    rest = max(1, total - w)
    low = lr * min_ratio

    def schedule(step: mx.array) -> mx.array:
        step = mx.array(step, dtype=mx.float32)
        warm = lr * (step + 1) / w
        progress = mx.minimum((step - w) / rest, 1.0)
        cos = low + (lr - low) * 0.5 * (1 + mx.cos(math.pi * progress))
        return mx.where(step < w, warm, cos)

    return schedule


def enable_grad_checkpoint(cm: ClaraModel) -> None:
    """Recompute each transformer block in the backward pass (`mx.checkpoint`): less memory.

    The recomputation happens after the forward pass has returned, so what Python state the
    block reads is pinned here: the active adapter, and a dropout seed drawn at forward time.
    """
    layers = cm.lm.model.layers
    cls = type(layers[0])
    if not getattr(cls, "_clara_checkpoint_patched", False):
        call = cls.__call__

        def checkpointed(self, x, *args, **kwargs):
            switch = getattr(self, "_clara_checkpoint", None)
            if switch is None:
                return call(self, x, *args, **kwargs)
            active = switch.active
            seed = int(mx.random.randint(0, 2**31 - 1, ()).item())

            def inner(params, x):
                previous, switch.active = switch.active, active
                mx.random.seed(seed)  # same dropout masks in the forward and the recompute
                try:
                    self.update(params, strict=False)
                    return call(self, x, *args, **kwargs)  # mask/cache: captured constants
                finally:
                    switch.active = previous

            params = G.trainable(self)
            out = mx.checkpoint(inner)(params, x)
            self.update(params, strict=False)  # the block runs again later (other adapter)
            return out

        cls.__call__ = checkpointed
        cls._clara_checkpoint_patched = True
    for layer in layers:
        layer._clara_checkpoint = cm.switch


def disable_grad_checkpoint(cm: ClaraModel) -> None:
    for layer in cm.lm.model.layers:
        layer._clara_checkpoint = None


def _work(ex: Example, n_mem: int) -> int:
    """Positions processed for one example (for tokens/s)."""
    n = len(ex.gen.tokens) if ex.gen else 0
    n += sum(len(d) + 3 + n_mem for d in ex.docs) + len(ex.text)
    return n + (len(ex.query) + 3 + n_mem if ex.query else 0)


def checkpoints(out: str | os.PathLike) -> list[Path]:
    """Resumable checkpoints in `out`, oldest first (`step-N` by N, then `final`)."""
    out = Path(out)
    found = [p for p in out.glob(f"{STEP_PREFIX}*") if (p / STATE_FILE).exists()]
    found.sort(key=lambda p: int(p.name[len(STEP_PREFIX) :]))
    if (out / FINAL / STATE_FILE).exists():
        found.append(out / FINAL)
    return found


def prune_checkpoints(out: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step checkpoints in `out` (`keep` 0: delete nothing);
    `final` stays. Returns what was deleted. Each step checkpoint holds the adapters and the optimiser
    state (three times the adapters' size), so a long run saving often fills a disk."""
    if keep <= 0:
        return []
    steps = [p for p in checkpoints(out) if p.name.startswith(STEP_PREFIX)]
    gone = steps[:-keep]
    for p in gone:
        shutil.rmtree(p)
    return gone


def base_of(checkpoint: str | os.PathLike | None) -> Path | None:
    """The fine-tuned base model a full fine-tuning checkpoint carries, if any."""
    if checkpoint is None:
        return None
    base = Path(checkpoint) / BASE_DIR
    return base if (base / "config.json").exists() else None


def save_base(cm: ClaraModel, path: Path) -> None:
    """Write the (fully fine-tuned) base weights as an mlx-lm model directory."""
    path.mkdir(parents=True, exist_ok=True)
    weights = {}
    for k, v in tree_flatten(cm.lm.parameters()):
        if ".lora_" in k:
            continue
        weights[k.replace(".base.", ".")] = v  # MultiLoRALinear wraps the original as `.base`
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(cm.info.config, indent=2, sort_keys=True))
    src = Path(cm.info.path)
    for f in src.iterdir():
        if f.is_file() and (f.name.startswith("tokenizer") or f.suffix in (".jinja", ".tiktoken")):
            shutil.copy(f, path / f.name)
        elif f.name in (
            "special_tokens_map.json",
            "vocab.json",
            "merges.txt",
            "generation_config.json",
        ):
            shutil.copy(f, path / f.name)


def _from_checkpoint(path: Path) -> bool:
    return path.name == BASE_DIR and (path.parent / "clara_config.json").exists()


class Trainer:
    """Runs one stage over its examples; `run(resume_from)` returns the final checkpoint."""

    def __init__(
        self,
        cm: ClaraModel,
        stage: Stage,
        examples: Sequence[Example],
        config: TrainConfig,
        group: mx.distributed.Group | None = None,
    ) -> None:
        if not examples:
            raise ClaraError("no training examples")
        self.cm, self.stage, self.examples, self.cfg = cm, stage, list(examples), config
        self.group = group
        self._stops = StopRequests()  # entered by `run`: Ctrl-C/SIGTERM stop at a step's end
        self.rank = group.rank() if group is not None else 0
        self.world = group.size() if group is not None else 1
        self.out = Path(config.out)
        self.micro = config.batch_size
        self.global_batch = config.batch_size * config.grad_accum * self.world
        n = len(self.examples)
        self.total_steps = config.max_steps or max(
            1, math.ceil(config.epochs * n / self.global_batch)
        )
        self.step = 0
        self._clock: tuple[float | None, float | None] = (None, None)  # (seconds before, start)
        self._unlogged: list[dict] = []  # steps since the last metrics row: kept by checkpoints
        self.schedule = lr_schedule(
            config.learning_rate, self.total_steps, config.warmup, config.min_lr_ratio
        )
        self.optimizer = optim.Adam(
            learning_rate=self.schedule,
            betas=list(config.betas),
            bias_correction=True,
        )
        self.vg = G.value_and_grad(cm, self._loss)
        self._orders: dict[int, np.ndarray] = {}
        self._bf16 = _blas.DecodeCopies("bfloat16")
        if config.bf16_products and not config.full:
            self._bf16.update(frozen_matrices(cm))

    # ---- data order -------------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            rng = np.random.default_rng([self.cfg.seed, epoch])
            order = rng.permutation(len(self.examples))
            if self.cfg.length_buckets:
                order = self._bucketed(order, rng)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def _bucketed(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`order` with each window of 16 global batches sorted by length, batches shuffled."""
        if not hasattr(self, "_lengths"):
            self._lengths = np.array([_work(e, self.cm.n_mem) for e in self.examples])
        g = self.global_batch
        full = len(order) // g * g  # a last partial batch stays last, so batches stay aligned
        out = [order[full:]]
        for lo in range(0, full, 16 * g):
            window = order[lo : min(lo + 16 * g, full)]
            window = window[np.argsort(self._lengths[window], kind="stable")]
            batches = [window[i : i + g] for i in range(0, len(window), g)]
            out[-1:-1] = [batches[i] for i in rng.permutation(len(batches))]
        return np.concatenate(out)

    def _at(self, position: int) -> Example:
        n = len(self.examples)
        return self.examples[int(self._order(position // n)[position % n])]

    def step_examples(self, step: int) -> list[list[list[Example]]]:
        """[micro][rank] -> examples of global step `step`."""
        start = step * self.global_batch
        out = []
        for m in range(self.cfg.grad_accum):
            ranks = []
            for r in range(self.world):
                lo = start + (m * self.world + r) * self.micro
                ranks.append([self._at(p) for p in range(lo, lo + self.micro)])
            out.append(ranks)
        return out

    # ---- one step ---------------------------------------------------------------------------
    def _loss(self, examples, norm):
        return self.stage.loss(examples, norm)

    def _all_sum(self, tree):
        """Sum `tree` over the ranks in ONE collective: the arrays are flattened into one
        buffer (hundreds of small all_sums, each a round trip, cost more than the step)."""
        if self.world == 1:
            return tree
        flat = tree_flatten(tree)
        if not flat:
            return tree
        parts = [v.reshape(-1).astype(mx.float32) for _, v in flat]
        summed = mx.distributed.all_sum(mx.concatenate(parts), group=self.group)
        out, lo = [], 0
        for (k, v), part in zip(flat, parts):
            out.append((k, summed[lo : lo + part.size].reshape(v.shape).astype(v.dtype)))
            lo += part.size
        return tree_unflatten(out)

    def train_step(self) -> dict:
        """One optimiser step (all micro-batches); returns the step's metrics."""
        cfg, cm = self.cfg, self.cm
        cm.switch.check_thread()  # (before value_and_grad swaps the parameters in)
        batches = self.step_examples(self.step)
        counts = [self.stage.counts(e) for mb in batches for rk in mb for e in rk]
        norm = {k: sum(c[k] for c in counts) for k in counts[0]}
        mx.random.seed((cfg.seed * 1_000_003 + self.step * 9_973 + self.rank) % (2**32))
        grads, sums, work, rankings = None, {}, 0, []
        passes = [
            mb[self.rank][lo : lo + (cfg.pass_size or len(mb[self.rank]))]
            for mb in batches
            for lo in range(0, len(mb[self.rank]), cfg.pass_size or len(mb[self.rank]))
        ]
        for mine in passes:
            (loss, aux), g = self.vg(mine, norm)
            grads = G.add(grads, g)
            sums["loss"] = sums.get("loss", 0) + loss
            for k, v in aux.items():
                if k == "ranking":
                    rankings.append((np.array(v), [e.pos for e in mine]))
                else:
                    sums[k] = sums.get(k, 0) + v
            mx.eval(grads, sums)
            work += sum(_work(e, cm.n_mem) for e in mine)
        grads, sums = self._all_sum(grads), self._all_sum(sums)
        if cfg.clip > 0:
            grads, gnorm = G.clip(grads, cfg.clip)
        else:  # --clip 0: no clipping
            gnorm = G.global_norm(grads)
        loss, norm_value = float(sums["loss"]), float(gnorm)
        if not (math.isfinite(loss) and math.isfinite(norm_value)):  # before the update
            if self.rank:  # every rank sees the same sums: rank 0 says it, once
                raise SystemExit(1)
            bad = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm_value}"
            raise ClaraError(
                f"training diverged at step {self.step + 1}: {bad}. This step was not applied "
                "and nothing was saved for it; train again into a new --out with a lower --lr "
                "(or --tau, --retrieval-weight, --distill-weight nearer their defaults), from "
                "the last step-N checkpoint with --init-from if you want to keep its steps"
            )
        self.optimizer.update(cm, grads)
        mx.eval(cm.parameters(), self.optimizer.state)
        m = {"loss": loss, "grad_norm": norm_value, "work": work * self.world}
        m["lr"] = float(self.schedule(self.step))
        if "ce" in sums and norm.get("tokens"):
            m["ce"] = float(sums["ce"]) / norm["tokens"]
        if "kl" in sums and norm.get("tokens"):
            m["kl"] = float(sums["kl"]) / norm["tokens"]
        if "mse" in sums and norm.get("docs"):
            m["mse"] = float(sums["mse"]) / norm["docs"]
        if "nce" in sums and norm.get("queries"):
            m["nce"] = float(sums["nce"]) / norm["queries"]
        if rankings:
            ranked = [r.tolist() for arr, _ in rankings for r in arr]
            gold = [p for _, pos in rankings for p in pos]
            m.update(recall_precision_at_k(ranked, gold, RECALL_KS))
        self.step += 1
        return m

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, name: str) -> Path:
        """Write a checkpoint `out/name` (atomic: staged in a temp dir, then renamed). During
        `run`, Ctrl-C and SIGTERM wait until it is written: between removing an older `name`
        and renaming the new one into place, an interrupt would lose both."""
        with self._stops.writing():
            return self._save(name)

    def _save(self, name: str) -> Path:
        cm = self.cm
        self.out.mkdir(parents=True, exist_ok=True)
        staging = self.out / f".tmp-{name}"
        if staging.exists():
            shutil.rmtree(staging)
        base_tmp = self.out / f".tmp-{name}-base"
        if base_tmp.exists():
            shutil.rmtree(base_tmp)
        if self.cfg.full:  # the checkpoint's adapters belong to the new base weights
            save_base(cm, base_tmp)
            cm.info.fingerprint = fingerprint_weights(base_tmp)
            cm.info.model_id = f"{self.cfg.stage} fine-tuned base ({BASE_DIR}/ beside the adapters)"
        elif _from_checkpoint(Path(cm.info.path)):  # a fine-tuned base travels with its adapters
            shutil.copytree(cm.info.path, base_tmp)
        else:
            base_tmp = None
        extra = {
            "training": {
                "stage": self.cfg.stage,
                "step": self.step,
                "total_steps": self.total_steps,
                "full_finetuning": self.cfg.full,
                **self.cfg.extra,
            }
        }
        save_checkpoint(cm, staging, extra=extra)
        if base_tmp is not None:
            os.replace(base_tmp, staging / BASE_DIR)
            cm.info.path = self.out / name / BASE_DIR
        opt = dict(tree_flatten(self.optimizer.state))
        mx.save_safetensors(str(staging / OPTIMIZER_FILE), opt)
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "config": config_dict(self.cfg),
            "elapsed_s": round(self._elapsed(), 2),  # training seconds up to this step
            # (a resumed run's next row averages them with its own steps, as one run's would)
            "unlogged": [{k: float(v) for k, v in m.items()} for m in self._unlogged],
        }
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        final = self.out / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        return final

    def _elapsed(self, now: float | None = None) -> float:
        """Training seconds so far, those of the runs this one resumes included."""
        before, started = self._clock
        if started is None:
            return before or 0.0
        return before + (time.perf_counter() if now is None else now) - started

    def restore(self, checkpoint: Path) -> None:
        """Optimiser state and step of `checkpoint` (weights are loaded with the model)."""
        state = json.loads((checkpoint / STATE_FILE).read_text())
        if state["total_steps"] != self.total_steps:
            raise ClaraError(
                f"{checkpoint} was trained for {state['total_steps']} steps but this run plans "
                f"{self.total_steps}; resume with the same data, batch size, epochs and steps"
            )
        self.step = int(state["step"])
        self._clock = (state.get("elapsed_s"), None)  # (older checkpoints: from metrics.jsonl)
        self._unlogged = list(state.get("unlogged", []))
        fix = f"move {checkpoint} away to resume from the checkpoint before it"
        self.optimizer.state = tree_unflatten(
            list(read_weights(checkpoint / OPTIMIZER_FILE, fix).items())
        )

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, resume_from: Path | None = None) -> Path:
        cfg = self.cfg
        if resume_from is not None:
            self.restore(resume_from)
        lead = self.rank == 0
        metrics_path = self.out / METRICS_FILE
        before = 0.0  # training seconds of the run this one resumes
        if lead:
            self.out.mkdir(parents=True, exist_ok=True)
            before = _truncate_metrics(metrics_path, self.step)
        if self._clock[0] is not None:  # the checkpoint's own: not the last logged row's
            before = self._clock[0]
        self.cm.train()
        from clara_cli.common import progress

        bar = progress(
            range(self.step, self.total_steps),
            total=self.total_steps,
            desc=f"{cfg.stage}",
            unit="step",
            quiet=cfg.quiet or not lead,
            lines=False,  # (its own lines: one per logged step, below)
        )
        if self.step and hasattr(bar, "refresh"):
            bar.n = self.step
            bar.refresh()
        self._clock = (before, time.perf_counter())
        with StopRequests() as self._stops:
            try:
                return self._loop(bar, metrics_path)
            finally:
                self._stops = StopRequests()  # (not entered: signals act as before)

    def _loop(self, bar, metrics_path: Path) -> Path:
        cfg, lead = self.cfg, self.rank == 0
        window, t0 = self._unlogged, time.perf_counter()
        for _ in bar:
            m = self.train_step()
            window.append(m)
            now = time.perf_counter()
            done = self.step == self.total_steps
            if lead and hasattr(bar, "set_postfix"):
                bar.set_postfix(
                    loss=f"{m['loss']:.3f}", tok_s=f"{m['work'] / max(now - t0, 1e-9):.0f}"
                )
            t0 = now
            if lead and (self.step % cfg.log_every == 0 or done):
                row = _summarise(
                    window, self.step, self.step * self.global_batch / len(self.examples)
                )
                row["elapsed_s"] = round(self._elapsed(now), 2)
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                if not sys.stderr.isatty() and not cfg.quiet:
                    print(_describe(cfg.stage, row, self.total_steps), file=sys.stderr, flush=True)
                window = self._unlogged = []
            stop = cfg.stop_after is not None and self.step >= cfg.stop_after and not done
            asked = not done and self._stop_requested()
            periodic = cfg.save_every and self.step % cfg.save_every == 0
            if lead and not done and (stop or asked or periodic):
                self.save(f"{STEP_PREFIX}{self.step:06d}")
                prune_checkpoints(self.out, cfg.keep_last)
                if not asked:  # (a first import of matplotlib takes a second)
                    plot_losses(metrics_path, self.out / "loss.png")
            if asked:
                if self.world > 1:  # nobody leaves before rank 0 has written
                    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))
                raise Stopped(self.step)
            if stop:
                self.cm.eval()
                return self.out / f"{STEP_PREFIX}{self.step:06d}"
        self.cm.eval()
        final = self.out / FINAL
        if lead:
            final = self.save(FINAL)
            plot_losses(metrics_path, self.out / "loss.png")
        if self.world > 1:  # nobody leaves before rank 0 has written
            mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))
        return final

    def _stop_requested(self) -> bool:
        """Ctrl-C or SIGTERM since the loop began, on any rank: every rank stops after the
        same step (one that went on would wait in the next step's all_sum for good)."""
        asked = self._stops.requested
        if self.world > 1:
            flags = mx.distributed.all_sum(mx.array(float(asked)), group=self.group)
            asked = flags.item() > 0
        return asked


def config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d


def _summarise(window: list[dict], step: int, epoch: float) -> dict:
    row: dict = {"step": step, "epoch": round(epoch, 4)}
    keys = {k for m in window for k in m} - {"work"}
    for k in sorted(keys):
        vals = [m[k] for m in window if k in m]
        row[k] = round(float(np.mean(vals)), 6)
    row["lr"] = window[-1]["lr"]
    row["positions"] = int(sum(m["work"] for m in window))
    return row


def _describe(stage: str, row: dict, total: int) -> str:
    extras = " ".join(
        f"{k}={row[k]:.4g}" for k in ("ce", "kl", "mse", "nce", "recall@1", "recall@5") if k in row
    )
    return f"{stage} step {row['step']}/{total} loss={row['loss']:.4f} {extras} lr={row['lr']:.2e}"


def _truncate_metrics(path: Path, step: int) -> float:
    """Keep metric rows up to `step` (a resumed run rewrites what came after); returns the
    last kept row's `elapsed_s`, where a resumed run's clock goes on from (0.0 if none)."""
    if not path.exists():
        return 0.0
    rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))
    return float(json.loads(keep[-1]).get("elapsed_s", 0.0)) if keep else 0.0


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def plot_losses(metrics_path: Path, png: Path) -> Path | None:
    """Loss curve (and recall@1 for the joint stage) as a PNG; None without matplotlib."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in rows], label="loss")
    if any("ce" in r for r in rows) and any("mse" in r for r in rows):
        ax.plot(steps, [r.get("ce", np.nan) for r in rows], label="CE", alpha=0.7)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if any("recall@1" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("recall@1", np.nan) for r in rows], "g--", label="recall@1")
        ax2.set_ylabel("recall@1 (candidates)")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
