"""A clara checkpoint from train_torch.py's outputs: the config of the checkpoint the run
started from (`--base`, default the shipped one) and any tensor the run did not write, with the
run's float16 adapters and memory-token embeddings.

    .venv/bin/python docs/runs/2026-12-04-h200/assemble.py RUN_OUTPUT_DIR runs/h200 [--base DIR]

`--base` must be the checkpoint whose adapters the run's `--init` held (a chain of calls: the
one its first call started from), or the tensors the run did not train come from another.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import clara  # noqa: E402,F401,I001  (before mlx: clara's BLAS)
import mlx.core as mx  # noqa: E402
from clara.checkpoint import COMPATIBLE_KEY, CONFIG_FILE, WEIGHTS_FILE  # noqa: E402

SHIPPED = Path(clara.__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the trainer's --out")
    p.add_argument("dst", type=Path, help="the clara checkpoint folder to write")
    p.add_argument("--base", type=Path, default=SHIPPED, help="the checkpoint the run began from")
    args = p.parse_args()
    src, dst, base = args.src, args.dst, args.base
    weights = mx.load(str(base / WEIGHTS_FILE))
    replaced = 0
    for name in ("compressor", "generator", "query", "tokens"):
        f = src / f"{name}.safetensors"
        if not f.exists():
            print(f"{f}: missing, keeping the shipped {name} tensors", file=sys.stderr)
            continue
        for k, v in mx.load(str(f)).items():
            if k not in weights or weights[k].shape != v.shape:
                raise SystemExit(f"{f}: unexpected tensor {k} {v.shape}")
            weights[k] = v if k == "memory_center" else v.astype(mx.float16)
            replaced += 1
    config = json.loads((base / CONFIG_FILE).read_text())
    config.pop("soup", None)
    log = [json.loads(x) for x in (src / "log.jsonl").read_text().splitlines() if x.strip()]
    if (src / "compressor.safetensors").exists() or (src / "tokens.safetensors").exists():
        # new memory: collections of the checkpoints before are not readable with it
        config.pop(COMPATIBLE_KEY, None)
        config.pop("query_only", None)
    devices = sorted({r.get("device_name", r.get("device", "?")) for r in log if "args" in r})
    config["training"] = {
        "recipe": f"docs/runs/2026-12-04-h200/train_torch.py (PyTorch on {', '.join(devices)})",
        "init_from": str(base),
        "calls": sum(1 for r in log if "args" in r),
        "log": [r for r in log if "done" in r],
    }
    config["installed_from"] = str(dst)
    dst.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(dst / WEIGHTS_FILE), weights)
    (dst / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if (src / "log.jsonl").exists():
        shutil.copy(src / "log.jsonl", dst / "train_log.jsonl")
    print(f"{dst}: {replaced} tensors from {src}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
