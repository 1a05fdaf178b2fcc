"""`clara-models import-clara`: Apple's reference checkpoints, imported and run faithfully.

Each case builds a tiny random Hugging Face model, converts it with `mlx_lm.convert` (the
README's path), writes a reference-layout checkpoint with torch (tests/reference_twin.py),
imports it, and compares clara's memory vectors, query vectors, retrieval scores and greedy
tokens with the reference computation in PyTorch. Everything is float32 on both sides:
vectors agree to rtol 1e-3 / atol 1e-4 (float rounding of two BLAS libraries); scores to 1e-4;
greedy tokens exactly.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from clara import _blas  # noqa: E402
from clara.checkpoint import load_clara  # noqa: E402
from clara.errors import CheckpointError, ClaraError  # noqa: E402
from clara.generate import generate  # noqa: E402
from clara.prompt import memory_prompt  # noqa: E402
from clara.reference.importer import import_reference  # noqa: E402
from clara.reference.pth import load_pth  # noqa: E402
from clara.retrieval import cosine_scores  # noqa: E402
from clara_cli.models import main as models_main  # noqa: E402
from tests import reference_twin as twin  # noqa: E402
from tests.tiny import build_tiny_tokenizer  # noqa: E402

DOCS = [
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.",
    "The train leaves the station at seven o'clock and arrives in the city two hours later. "
    "She walked to the market on Monday, bought bread, apples, cheese and a bottle of milk.",
]
QUESTIONS = ["What is the capital of Japan?", "When does the train leave?"]
MAX_NEW = 10


def _mlx_convert(hf_dir: Path, out: Path) -> Path:
    from mlx_lm import convert

    convert(str(hf_dir), mlx_path=str(out), dtype="float32")
    return out


def _close(clara_vec: mx.array, ref_vec, rtol: float = 1e-3, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(np.array(clara_vec), ref_vec.numpy(), rtol=rtol, atol=atol)


def _greedy(cm, question: str, memories: list[mx.array]) -> list[int]:
    """Greedy tokens in float32 (no AMX tiles), as the float32 reference decodes."""
    prompt = memory_prompt(cm, question, memories)
    with _blas.float32_products():
        return [c.token for c in generate(cm, prompt, max_tokens=MAX_NEW) if c.token is not None]


def _check_faithful(cm, ref: twin.RefModel, template: str, query_adapter: str) -> None:
    """clara vs reference: memories, queries, scores, greedy tokens from the top-2 memories."""
    mem = cm.compress(DOCS)
    ref_mem = twin.ref_encode(ref, DOCS, "encoder_adapter")
    assert mem.shape == tuple(ref_mem.shape)
    _close(mem, ref_mem)
    q = cm.encode_queries(QUESTIONS)
    ref_q = twin.ref_encode(ref, QUESTIONS, query_adapter)
    _close(q, ref_q)
    scores = cosine_scores(q, mem)
    np.testing.assert_allclose(np.array(scores), twin.ref_scores(ref_q, ref_mem), atol=1e-4)
    for i, question in enumerate(QUESTIONS):
        top = [int(j) for j in np.argsort(-np.array(scores[i]))[:2]]
        ours = _greedy(cm, question, [mem[j] for j in top])
        theirs = twin.ref_generate(ref, question, ref_mem[top], template, MAX_NEW)
        assert ours == theirs and len(ours) > 0


@pytest.fixture(scope="module")
def mistral(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Mistral twin in HF format and its mlx_lm.convert'ed MLX base."""
    root = tmp_path_factory.mktemp("mistral-twin")
    tok = twin.build_spm_tokenizer(root / "tok")
    hf = twin.build_hf_twin(root / "hf", tok, "mistral", seed=0)
    other = twin.build_hf_twin(root / "hf-other", tok, "mistral", seed=7)
    return {
        "hf": hf,
        "mlx": _mlx_convert(hf, root / "mlx"),
        "other": _mlx_convert(other, root / "mlx-other"),
        "root": root,
    }


def test_e2e_rate16_distinct_tokens_matches_reference(mistral, tmp_path: Path, capsys) -> None:
    """E2E (query reasoner), `<MEM0>..<MEM1>`, sep: all of clara's outputs follow the reference.

    doc_max 32 with a 40-token document also checks the reference's truncation (33 tokens, no
    EOS); two memory blocks check the `<SEP>` slot layout.
    """
    src = tmp_path / "CLaRa-E2E" / "compression-16"
    ref = twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    out = tmp_path / "imported"
    rc = models_main(["import-clara", str(src), "--base", str(mistral["mlx"]), "--out", str(out)])
    assert rc == 0
    assert "imported e2e checkpoint: compression 16x, 2 memory vectors" in capsys.readouterr().out
    cm = load_clara(mistral["mlx"], out, dtype=None)
    assert cm.config.prompt_template == "apple-qa" and cm.config.mem_tokens == ["<MEM0>", "<MEM1>"]
    assert len(cm.tokenize([DOCS[2]])[0]) == 33  # doc_max + 1, as the reference keeps
    _check_faithful(cm, ref, "qa", "query_reasoner_adapter")


def test_base_rate128_shared_token_no_sep_matches_reference(tmp_path: Path) -> None:
    """Base (paraphrase prompt), one shared `<MEM>`, sep=False (the reference then places the
    second block over the first `<SEP>`), a template without a system role (its fallback)."""
    tok = twin.build_spm_tokenizer(tmp_path / "tok", twin.NO_SYSTEM_TEMPLATE)
    hf = twin.build_hf_twin(tmp_path / "hf", tok, "mistral", seed=3)
    mlx_dir = _mlx_convert(hf, tmp_path / "mlx")
    src = tmp_path / "compression-128"
    ref = twin.build_reference(
        hf, src, doc_max=256, rate=128, distinct=False, sep=False, stage="stage1", query=False
    )
    out = import_reference(src, mlx_dir, tmp_path / "imported")
    info = json.loads((out / "clara_config.json").read_text())
    assert info["imported_from"]["kind"] == "base"
    cm = load_clara(mlx_dir, out, dtype=None)
    assert cm.config.prompt_template == "apple-paraphrase" and cm.n_mem == 2
    assert cm.config.mem_tokens == ["<MEM>", "<MEM>"] and not cm.config.reference_sep
    # no query reasoner in a Base checkpoint: queries go through the compressor
    _check_faithful(cm, ref, "paraphrase", "encoder_adapter")


def test_hyperclova_x_seed_twin_imports_and_matches(tmp_path: Path) -> None:
    """HyperCLOVA X SEED's text model is a Llama with a byte-level BPE, a ChatML template and a
    vocabulary padded past its tokenizer: the reference resizes it to tokenizer + added tokens."""
    tok = build_tiny_tokenizer(tmp_path / "tok")
    hf = twin.build_hf_twin(tmp_path / "hf", tok, "llama", extra_rows=24, seed=5)
    mlx_dir = _mlx_convert(hf, tmp_path / "mlx")
    src = tmp_path / "hcx-clara"
    ref = twin.build_reference(
        hf, src, doc_max=64, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    out = tmp_path / "imported"
    assert models_main(["import-clara", str(src), "--base", str(mlx_dir), "--out", str(out)]) == 0
    cm = load_clara(mlx_dir, out, dtype=None)
    assert cm.config.vocab_base == 512 and cm.n_mem == 4
    _check_faithful(cm, ref, "qa", "query_reasoner_adapter")


def test_tied_embeddings_base_matches_reference(tmp_path: Path) -> None:
    """A base whose output head is its embedding (small Llamas): the reference saves only
    `embed_tokens`, and the added rows serve both as input rows and as output logits."""
    tok = build_tiny_tokenizer(tmp_path / "tok")
    hf = twin.build_hf_twin(tmp_path / "hf", tok, "llama", tie=True, seed=9)
    mlx_dir = _mlx_convert(hf, tmp_path / "mlx")
    src = tmp_path / "compression-32"
    ref = twin.build_reference(
        hf, src, doc_max=64, rate=32, distinct=True, sep=True, stage="stage1_2", query=False
    )
    assert set(load_pth(src / "decoder_first_last_layers.pth")) == {"model.embed_tokens.weight"}
    cm = load_clara(mlx_dir, import_reference(src, mlx_dir, tmp_path / "imported"), dtype=None)
    assert not hasattr(cm.lm, "lm_head") and cm.config.prompt_template == "apple-qa"
    _check_faithful(cm, ref, "qa", "encoder_adapter")


def test_import_refuses_another_base_model(mistral, tmp_path: Path, capsys) -> None:
    src = tmp_path / "compression-16"
    twin.build_reference(
        mistral["hf"],
        src,
        doc_max=32,
        rate=16,
        distinct=True,
        sep=True,
        stage="stage1_2",
        query=False,
    )
    out = tmp_path / "imported"
    rc = models_main(["import-clara", str(src), "--base", str(mistral["other"]), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "different base model" in err and "mlx_lm.convert --hf-path" in err
    assert not out.exists()
    # --force replaces a checkpoint, never another folder's files (it would empty it)
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["import-clara", str(src), "--base", str(mistral["mlx"]), "--out", str(mine), "--force"]
    assert models_main(argv) == 1 and "not a clara checkpoint" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"
    # a folder holding both rates asks for one of them
    with pytest.raises(CheckpointError, match="compression-16"):
        import_reference(tmp_path, mistral["mlx"], out)


def test_pth_reader_reads_tensors_and_runs_no_pickled_code(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bf16 = torch.randn(5, 3).to(torch.bfloat16)
    strided = torch.randn(4, 6).t()[1:]
    param = torch.nn.Parameter(torch.randn(3))
    obj = {"a": {"bf16": bf16, "strided": strided}, "p": param, "meta": [1, 2.5, "s", None, True]}
    torch.save(obj, tmp_path / "ok.pth")
    got = load_pth(tmp_path / "ok.pth")
    assert got["a"]["bf16"].dtype == mx.bfloat16
    np.testing.assert_array_equal(np.array(got["a"]["bf16"].astype(mx.float32)), bf16.float())
    np.testing.assert_array_equal(np.array(got["a"]["strided"]), strided.numpy())
    np.testing.assert_array_equal(np.array(got["p"]), param.detach().numpy())
    assert got["meta"] == [1, 2.5, "s", None, True]

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="holds a pickled"):
        load_pth(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "old.pth").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(CheckpointError, match="zip-format"):
        load_pth(tmp_path / "old.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as z:  # what torch wrote: one data.pkl + storages
        assert sum(n.endswith("data.pkl") for n in z.namelist()) == 1


def test_imported_checkpoint_indexes_and_searches_like_the_reference(
    mistral, tmp_path: Path, capsys
) -> None:
    """`clara-index add/search --checkpoint IMPORTED`: the stored chunks' scores for a question
    are the reference's (query reasoner vs compressor, cosine of flattened vectors)."""
    from indexing import cli as index_cli
    from indexing.store import Collection

    src = tmp_path / "compression-16"
    ref = twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    ckpt = import_reference(src, mistral["mlx"], tmp_path / "imported")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(DOCS):
        (docs / f"d{i}.txt").write_text(text)
    common = ["--model", str(mistral["mlx"]), "--checkpoint", str(ckpt), "--index", str(tmp_path)]
    assert (
        index_cli.main(["add", str(docs), "--chunk-tokens", "32", "--overlap", "4", *common]) == 0
    )
    capsys.readouterr()
    search = ["search", QUESTIONS[1], "-k", "3", "--json", "--mode", "dense", *common]
    assert index_cli.main(search) == 0  # dense: the reference's cosine ranking
    results = json.loads(capsys.readouterr().out)["results"]
    with Collection.open(tmp_path, "default", readonly=True) as col:
        chunks = [c for d in col.list_documents() for c in col.document_chunks(d.id)]
    texts = [c.text for c in chunks]
    ref_scores = twin.ref_scores(
        twin.ref_encode(ref, [QUESTIONS[1]], "query_reasoner_adapter"),
        # what the compressor read: each chunk's context line, then its text
        twin.ref_encode(ref, [c.contextual_text for c in chunks], "encoder_adapter"),
    )[0]
    expected = sorted(zip(ref_scores.tolist(), texts), reverse=True)[:3]
    assert len(texts) > 3 and len(results) == 3
    assert [r["text"] for r in results] == [t for _, t in expected]
    for r, (score, _) in zip(results, expected):
        assert r["score"] == pytest.approx(score, abs=2e-3)  # memories are stored as float16


def test_clara_train_refuses_an_imported_checkpoint(mistral, tmp_path: Path, capsys) -> None:
    """An architecture review: an imported checkpoint reads prompts laid out as its
    reference's, and clara-train built clara's own layout for it, so a run from one trained
    a prompt that serving and clara-eval never give it. Training from one is refused."""
    from training.cli import main as train_main

    src = tmp_path / "compression-16"
    twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    ckpt = import_reference(src, mistral["mlx"], tmp_path / "imported")
    data = tmp_path / "qa.jsonl"
    row = {"question": QUESTIONS[0], "docs": [DOCS[0]], "answer": "yes"}
    data.write_text(json.dumps(row) + "\n")
    args = ["instruct", "--model", str(mistral["mlx"]), "--data", str(data), "--init-from",
            str(ckpt), "--out", str(tmp_path / "run"), "--max-steps", "1", "-q"]  # fmt: skip
    assert train_main(args) != 0
    error = capsys.readouterr().err
    assert "is an imported checkpoint" in error and "leave out --init-from" in error
    assert not (tmp_path / "run" / "final").exists()


def test_clara_serve_answers_with_an_imported_checkpoint_as_the_reference(
    mistral, tmp_path: Path
) -> None:
    """A real `clara-serve` on an imported E2E checkpoint: the sources are the reference's top-2
    and the greedy answer is the reference's from those memories (as stored: float16)."""
    import openai

    from tests.test_server_harness import ServerProcess, add_documents

    src = tmp_path / "compression-16"
    ref = twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    ckpt = import_reference(src, mistral["mlx"], tmp_path / "imported")
    cm = load_clara(mistral["mlx"], ckpt, dtype=None)
    add_documents(tmp_path / "index", cm, [(f"d{i}.txt", t) for i, t in enumerate(DOCS)])
    proc = ServerProcess(
        "--model", str(mistral["mlx"]), "--checkpoint", str(ckpt),
        "--index", str(tmp_path / "index"), "--served-model-name", "clara-7b-twin",
        env={"CLARA_HOME": str(tmp_path / "home")}, log=tmp_path / "server.log",
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"{proc.wait_ready().url}/v1", api_key="x")
        resp = client.chat.completions.create(
            model="clara-7b-twin",
            messages=[{"role": "user", "content": QUESTIONS[0]}],
            max_tokens=MAX_NEW,
            temperature=0,
            extra_body={"top_k": 2, "retrieval_mode": "dense"},  # the reference's ranking
        )
        with pytest.raises(openai.BadRequestError, match="'mixed' needs clara's own") as bad:
            client.chat.completions.create(
                model="clara-7b-twin",
                messages=[{"role": "user", "content": QUESTIONS[0]}],
                max_tokens=2,
                extra_body={"mode": "mixed"},
            )
        assert bad.value.param == "mode"
    finally:
        proc.stop()
    from clara.checkpoint import default_reading_mode

    assert default_reading_mode(str(mistral["mlx"]), str(ckpt)) == "memory"
    with pytest.raises(ClaraError, match="--mode mixed needs clara's own prompt layout"):
        default_reading_mode(str(mistral["mlx"]), str(ckpt), "mixed")
    ref_mem = twin.ref_encode(ref, DOCS, "encoder_adapter")
    scores = twin.ref_scores(twin.ref_encode(ref, QUESTIONS[:1], "query_reasoner_adapter"), ref_mem)
    top = [int(i) for i in torch.argsort(scores[0], descending=True)[:2]]
    sources = resp.choices[0].message.model_extra["sources"]
    assert [s["filename"] for s in sources] == [f"d{i}.txt" for i in top]
    stored = ref_mem[top].half().float()  # the index keeps memory vectors as float16
    tokens = twin.ref_generate(ref, QUESTIONS[0], stored, "qa", MAX_NEW)
    assert tokens and resp.choices[0].message.content == cm.tokenizer.decode(tokens)


def test_prefix_cache_stops_before_an_imported_checkpoints_memory_tokens(
    mistral, tmp_path: Path
) -> None:
    """An imported checkpoint's memory slots carry its memory-token ids, the same whatever the
    documents: the prefix cache must key on the text before them, or a request would reuse an
    earlier request's memories. Requests for other documents each answer as alone."""
    from clara.decode import Decoder, PrefixCache, text_prefix
    from clara.stream import SamplingParams

    src = tmp_path / "compression-16"
    twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    ckpt = import_reference(src, mistral["mlx"], tmp_path / "imported")
    cm = load_clara(mistral["mlx"], ckpt, dtype=None)
    mem = cm.compress(DOCS)
    first_slot = cm.tokenizer.convert_tokens_to_ids(cm.config.mem_tokens[0])
    decoder = Decoder(cm, "generator", prefix_cache=PrefixCache())
    params = SamplingParams(max_tokens=MAX_NEW, ignore_eos=True)
    for docs in ([0, 1], [2, 0], [1, 2]):
        prompt = memory_prompt(cm, QUESTIONS[0], [mem[j] for j in docs])
        assert len(text_prefix(prompt)) == prompt.tokens.index(first_slot) > 0
        seq, first = decoder.add(prompt, params)
        got = [first.token]
        while decoder.sequences:
            got += [c.token for _, c in decoder.step()]
        alone = generate(cm, prompt, max_tokens=MAX_NEW, ignore_eos=True)
        assert got == [c.token for c in alone if c.token is not None], docs


def test_4bit_base_imports_and_stays_close_to_the_reference(mistral, tmp_path: Path) -> None:
    """The README's 4-bit base: the import's base check accepts it (embedding dequantized), the
    added rows sit beside a QuantizedEmbedding / quantized head, and memory vectors stay close
    to the float32 reference (quantization error only: cosine > 0.9 on this tiny model)."""
    from mlx_lm import convert

    q4 = tmp_path / "mlx-q4"
    convert(str(mistral["hf"]), mlx_path=str(q4), quantize=True, q_group_size=32, q_bits=4)
    src = tmp_path / "compression-16"
    ref = twin.build_reference(
        mistral["hf"], src, doc_max=32, rate=16, distinct=True, sep=True, stage="stage2", query=True
    )
    cm = load_clara(q4, import_reference(src, q4, tmp_path / "imported"), dtype=None)
    assert type(cm.lm.model.embed_tokens.base).__name__ == "QuantizedEmbedding"
    mem = np.array(cm.compress(DOCS))
    ref_mem = twin.ref_encode(ref, DOCS, "encoder_adapter").numpy()
    cos = (mem * ref_mem).sum(-1) / np.linalg.norm(mem, axis=-1) / np.linalg.norm(ref_mem, axis=-1)
    assert cos.mean() > 0.9
    assert len(_greedy(cm, QUESTIONS[0], [mx.array(mem[0])])) == MAX_NEW


def test_adapter_missing_a_lora_half_is_refused(tmp_path: Path) -> None:
    from clara.lora import TARGETS
    from clara.reference.importer import Reference, _lora_weights

    parts = {t: "self_attn" for t in TARGETS[:4]} | {t: "mlp" for t in TARGETS[4:]}
    state = {}
    for t, part in parts.items():
        key = f"base_model.model.model.layers.0.{part}.{t}"
        state[f"{key}.lora_A.weight"] = mx.zeros((4, 8))
        state[f"{key}.lora_B.weight"] = mx.zeros((8, 4))
    ref = Reference(tmp_path, {}, {"encoder_adapter": state}, mx.zeros((2, 8)), None)
    weights = _lora_weights(ref, n_layers=1, rank=4)
    assert len(weights) == 2 * 2 * len(TARGETS)  # (compressor, query) x (a, b) per layer
    del state[next(k for k in state if k.endswith("lora_B.weight"))]
    with pytest.raises(CheckpointError, match="lacks lora_A or lora_B"):
        _lora_weights(ref, n_layers=1, rank=4)


@pytest.mark.parametrize(
    "module,prog",
    [
        ("clara_cli.models", "clara-models"),
        ("server.cli", "clara-serve"),
        ("indexing.cli", "clara-index"),
        ("training.cli", "clara-train"),
        ("training.eval_cli", "clara-eval"),
    ],
)
def test_every_command_says_its_version(module, prog, capsys) -> None:
    """An upgrade changes what indexes need (README: Upgrading): `--version` tells which
    clara is installed; there was none."""
    import importlib

    import clara

    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"{prog} {clara.__version__}\n"


def test_the_package_and_the_library_agree_on_the_version() -> None:
    import tomllib

    import clara

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["version"] == clara.__version__
