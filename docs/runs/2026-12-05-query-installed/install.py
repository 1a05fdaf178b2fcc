"""Install a query-only run's query adapter as the shipped default (docs/TRAINING_RUNS.md, "The
query adapter alone, beside the installed compressor"):

    .venv/bin/python docs/runs/2026-12-05-query-installed/install.py runs/qinst/joint/final

`training.default_ckpt.install` copies the run (float16, as shipped). The run trained the query
adapter alone, so its compressor, generator and memory rows must be the installed ones, to the
bit: the memory fingerprint is checked before anything is replaced. The config keeps the notes
of where the compressor and generator came from, and lists the installed checkpoint's whole
fingerprint under `index_compatible`, so indexes built before (which recorded it) stay valid.
"""

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402, F401  # isort: skip  (first: the BLAS path before mlx loads)

from clara.checkpoint import (  # noqa: E402
    COMPATIBLE_KEY,
    CONFIG_FILE,
    checkpoint_fingerprint,
    index_fingerprints,
)
from training.default_ckpt import install  # noqa: E402
from training.default_recipe import PACKAGED  # noqa: E402

run = Path(sys.argv[1])
old = json.loads((PACKAGED / CONFIG_FILE).read_text())
before = index_fingerprints(PACKAGED)
staged = install(run, ROOT / "runs" / "install-staged")
if index_fingerprints(staged)[0] != before[0]:
    raise SystemExit(f"{run}: its memories differ from the installed ones; not installed")
config = json.loads((staged / CONFIG_FILE).read_text())
trained = config.pop("training", None)
if trained and Path(trained.get("data", "/")).is_relative_to(ROOT):  # not this machine's path
    trained["data"] = str(Path(trained["data"]).relative_to(ROOT))
for key in ("soup", "training"):  # where the compressor and generator came from
    if key in old:
        config[key] = old[key]
config["query_only"] = {
    "run": str(run),
    "command": "bash docs/runs/2026-12-05-query-installed/run.sh",
    "from": old.get("installed_from"),
    "training": trained,
}
config[COMPATIBLE_KEY] = sorted({*old.get(COMPATIBLE_KEY, []), checkpoint_fingerprint(PACKAGED)})
(staged / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
shutil.rmtree(PACKAGED)
shutil.move(str(staged), str(PACKAGED))
print(f"installed the query adapter of {run}; memory fingerprint {before[0]} kept")
