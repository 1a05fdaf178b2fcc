"""A clara checkpoint from train_torch.py's outputs: the shipped checkpoint's config and any
tensor the run did not write, with the run's float16 adapters and memory-token embeddings.

    .venv/bin/python docs/runs/2026-12-04-h200/assemble.py RUN_OUTPUT_DIR runs/h200
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import mlx.core as mx  # noqa: E402

import clara  # noqa: E402,F401
from clara.checkpoint import CONFIG_FILE, WEIGHTS_FILE  # noqa: E402

SHIPPED = Path(clara.__file__).resolve().parent / "checkpoints" / "smollm2-135m-16x"


def main() -> int:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    weights = mx.load(str(SHIPPED / WEIGHTS_FILE))
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
    config = json.loads((SHIPPED / CONFIG_FILE).read_text())
    config.pop("soup", None)
    log = [json.loads(x) for x in (src / "log.jsonl").read_text().splitlines() if x.strip()]
    config["training"] = {
        "recipe": "docs/runs/2026-12-04-h200 (PyTorch on one H200, from the adapters shipped before)",
        "init_from": config.get("installed_from", "clara/checkpoints/smollm2-135m-16x"),
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
