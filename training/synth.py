"""`clara-train synth`: stage-1/2 training data from a folder of documents.

Every chunk (the base model's tokens, `--doc-max-tokens` long) becomes a paraphrase record; a
teacher model writes question/answer pairs about each chunk (stage-1 "qa" records), and every
pair becomes a stage-2/3 record whose candidate documents are the source chunk plus the chunks
that look most similar to the question (TF-IDF), with `pos_index` pointing at the source.
The teacher is the local base model or any OpenAI-compatible chat endpoint (`--teacher-url`),
or, with `--cloze`, no model at all: fill-in-the-blank questions on salient spans
(`training.cloze`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clara.errors import ClaraError, DocumentError, TeacherError
from clara_cli.common import (
    add_model_args,
    model_dtype,
    non_negative_int,
    path_arg,
    positive_int,
)
from training.data import PretrainRecord, QARecord, pretrain_to_json, qa_to_json, write_jsonl

Teacher = Callable[[str, int], str]  # (chunk text, number of pairs) -> raw teacher reply

TEACHER_SYSTEM = (
    "You write reading-comprehension questions. Each question must be answerable from the "
    "document alone, and each answer must be a short span (a few words) taken from it."
)
TEACHER_USER = (
    "Document:\n{doc}\n\nWrite {n} different questions about this document with their short "
    "answers, in exactly this format:\nQ: <question>\nA: <answer>"
)
_QA_RE = re.compile(
    r"^\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*[:.]\s*(?P<q>.+?)\s*\n\s*(?:A|Answer)\s*[:.]\s*(?P<a>.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


PROG = "clara-train synth"


_NUMBERING = re.compile(r"^\s*\d+[.)]\s+")
_WORD = re.compile(r"[^\W_]+")
_STOP = frozenset(
    "the a an of to in on for and or is are was were be been it its this that with as by at "
    "from what which who whom when where why how does do did can".split()
)


def parse_qa_pairs(text: str, limit: int | None = None) -> list[tuple[str, str]]:
    """`Q: ...` / `A: ...` pairs from a teacher reply (numbering and `Question:` accepted, and
    dropped from the text); an "answer" that is itself a question is no pair."""
    pairs, seen = [], set()
    for m in _QA_RE.finditer(text):
        q = _NUMBERING.sub("", m.group("q")).strip()
        a = _NUMBERING.sub("", m.group("a")).strip()
        if q and a and not a.endswith("?") and q.lower() not in seen:
            seen.add(q.lower())
            pairs.append((q, a))
    return pairs[:limit] if limit else pairs


def grounded(answer: str, chunk: str) -> bool:
    """Whether at least half of the answer's content words are in the chunk: a teacher's
    answer the document does not support (a small model's invention) is no training target."""
    words = [w for w in _WORD.findall(answer.lower()) if w not in _STOP]
    if not words:
        return False
    have = set(_WORD.findall(chunk.lower()))
    return sum(w in have for w in words) * 2 >= len(words)


def openai_teacher(
    url: str,
    model: str,
    api_key: str | None = None,
    *,
    timeout: float = 120.0,
    client=None,
    max_tokens: int = 512,
) -> Teacher:
    """A teacher calling `POST {url}/chat/completions` (OpenAI-compatible, temperature 0)."""
    import httpx

    base = url.rstrip("/")
    if not base.endswith("/v1") and "/v1/" not in base + "/":
        base += "/v1"
    http = client or httpx.Client(timeout=timeout)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def ask(doc: str, n: int) -> str:
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": TEACHER_SYSTEM},
                {"role": "user", "content": TEACHER_USER.format(doc=doc, n=n)},
            ],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        try:
            r = http.post(f"{base}/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TeacherError(f"teacher {base} unreachable: {exc}") from exc
        if r.status_code != 200:
            raise TeacherError(f"teacher {base} answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            return r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TeacherError(
                f"teacher {base} sent an unexpected response: {r.text[:200]}"
            ) from exc

    return ask


def local_teacher(cm, max_tokens: int = 256) -> Teacher:
    """The local base model (no adapter) as the teacher, greedy."""
    from clara.generate import generate
    from clara.prompt import Prompt, encode, render

    tok = cm.tokenizer

    def ask(doc: str, n: int) -> str:
        messages = [
            {"role": "system", "content": TEACHER_SYSTEM},
            {"role": "user", "content": TEACHER_USER.format(doc=doc, n=n)},
        ]
        ids = encode(tok, render(tok, messages))
        return "".join(
            c.text for c in generate(cm, Prompt(ids, None), adapter=None, max_tokens=max_tokens)
        )

    return ask


@dataclass
class Chunked:
    text: str
    source: str


def read_chunks(
    paths: Sequence[str], tokenizer, max_tokens: int, overlap: int = 0
) -> list[Chunked]:
    """Chunks of every readable document under `paths` (those `clara-index add` reads)."""
    from indexing.chunking import chunk_document
    from indexing.readers import iter_inputs, read_document

    unreadable: list[DocumentError] = []
    files = iter_inputs(paths, unreadable=unreadable)
    for exc in unreadable:
        print(f"clara-train synth: skipping {exc}", file=sys.stderr)
    if not files:
        raise ClaraError(f"no documents found in {', '.join(map(str, paths))}")
    out = []
    skipped = len(unreadable)
    for f in files:
        try:
            doc = read_document(f)
        except DocumentError as exc:  # (its message names the file: it was named twice)
            print(f"clara-train synth: skipping {exc}", file=sys.stderr)
            skipped += 1
            continue
        for c in chunk_document(doc, tokenizer, max_tokens=max_tokens, overlap=overlap):
            if c.text.strip():
                out.append(Chunked(c.text.strip(), str(f)))
    if not out:
        raise ClaraError("the documents hold no text to train on")
    if skipped:
        print(f"clara-train synth: {skipped} of {len(files) + len(unreadable)} files skipped "
              "(above); the others are read", file=sys.stderr)  # fmt: skip
    return out


_WORD = re.compile(r"\w+", re.UNICODE)


def tfidf_neighbours(queries: Sequence[str], docs: Sequence[str], k: int) -> list[list[int]]:
    """Indices of the `k` docs most similar to each query (TF-IDF cosine), best first."""
    vocab: dict[str, int] = {}
    rows = [Counter(w.lower() for w in _WORD.findall(d)) for d in docs]
    for r in rows:
        for w in r:
            vocab.setdefault(w, len(vocab))
    df = np.zeros(len(vocab))
    for r in rows:
        for w in r:
            df[vocab[w]] += 1
    idf = np.log((1 + len(docs)) / (1 + df)) + 1

    def vec(counter: Counter) -> np.ndarray:
        v = np.zeros(len(vocab))
        for w, c in counter.items():
            if w in vocab:
                v[vocab[w]] = (1 + math.log(c)) * idf[vocab[w]]
        n = np.linalg.norm(v)
        return v / n if n else v

    D = np.stack([vec(r) for r in rows])  # (N, V)
    Q = np.stack([vec(Counter(w.lower() for w in _WORD.findall(q))) for q in queries])
    scores = Q @ D.T  # (Q, N)
    return [list(np.argsort(-s, kind="stable")[:k]) for s in scores]


def synthesize(
    chunks: Sequence[str],
    teacher: Teacher | None,
    *,
    questions_per_chunk: int = 3,
    candidates: int = 5,
    seed: int = 0,
    progress: Callable | None = None,
) -> tuple[list[PretrainRecord], list[QARecord]]:
    """Stage-1 records (paraphrase for every chunk, QA where the teacher gave pairs) and
    stage-2/3 records (each pair with its source chunk among `candidates` similar chunks)."""
    stage1 = [PretrainRecord("paraphrase", c) for c in chunks]
    pairs: list[tuple[int, str, str]] = []
    if teacher is not None:
        it = range(len(chunks))
        for i in progress(it, len(chunks)) if progress else it:
            got = parse_qa_pairs(teacher(chunks[i], questions_per_chunk), questions_per_chunk)
            got = [(q, a) for q, a in got if grounded(a, chunks[i])]
            if got:
                stage1.append(
                    PretrainRecord("qa", chunks[i], [q for q, _ in got], [a for _, a in got])
                )
                pairs += [(i, q, a) for q, a in got]
    rng = np.random.default_rng(seed)
    near = tfidf_neighbours([q for _, q, _ in pairs], chunks, candidates + 1) if pairs else []
    stage2 = []
    for (src, q, a), nn in zip(pairs, near):
        others = [int(j) for j in nn if j != src][: max(candidates - 1, 0)]
        docs = others + [src]
        rng.shuffle(docs)
        stage2.append(QARecord(q, [chunks[j] for j in docs], [a], [docs.index(src)]))
    return stage1, stage2


def add_synth_parser(sub) -> None:
    from clara_cli.common import add_quiet_arg

    p = sub.add_parser(
        "synth",
        help="build stage-1/2 data from a folder of documents",
        description=(
            "Build training data from documents: a paraphrase record for every chunk, and "
            "question/answer pairs written by a teacher model (the local base model, or any "
            "OpenAI-compatible endpoint). Writes OUT/stage1.jsonl (for `clara-train pretrain`) "
            "and OUT/stage2.jsonl (for `instruct` and `joint`)."
        ),
    )
    p.add_argument(
        "docs",
        nargs="+",
        type=path_arg,
        help="files, folders or globs (PDF, Markdown, HTML, text, Word, OpenDocument, EPUB)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the jsonl files go")
    p.add_argument(
        "--force", action="store_true",
        help="replace the stage1.jsonl and stage2.jsonl an earlier run left in --out (without "
        "it, such files stop the run before anything is read)",
    )  # fmt: skip
    add_model_args(
        p,
        model_use="its tokenizer chunks the documents and, without --teacher-url, it writes "
        "the questions",
        checkpoint=False,
    )
    p.add_argument(
        "--doc-max-tokens", type=positive_int, default=256,
        help="chunk length in tokens (default: 256, the default model's compressor length)",
    )  # fmt: skip
    p.add_argument(
        "--overlap",
        type=non_negative_int,
        default=0,
        help="tokens shared by consecutive chunks (default: 0)",
    )
    p.add_argument(
        "--teacher-url",
        help="OpenAI-compatible endpoint for the teacher, e.g. http://localhost:8000/v1",
    )
    p.add_argument("--teacher-model", help="model name to ask at --teacher-url")
    p.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the endpoint's API key (default: %(default)s)",
    )
    p.add_argument(
        "--questions-per-chunk", type=positive_int, default=3,
        help="questions the teacher (or --cloze) writes per chunk, at most (default: 3)",
    )  # fmt: skip
    p.add_argument(
        "--candidates",
        type=positive_int,
        default=5,
        help="documents per stage-2 record, the question's own and its nearest others; below "
        "2 the retrieval loss and R@k have nothing to rank (default: 5)",
    )
    p.add_argument("--no-qa", action="store_true", help="paraphrase records only (no teacher)")
    p.add_argument(
        "--cloze",
        action="store_true",
        help="no teacher model: write fill-in-the-blank questions on the dates, numbers, "
        "names, options and quoted terms of each chunk (training.cloze)",
    )
    p.add_argument("--max-chunks", type=positive_int, help="use at most this many chunks")
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed of the candidates' order and the cloze choices (default: 0)",
    )  # fmt: skip
    add_quiet_arg(p)
    p.set_defaults(func=cmd_synth)


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder above that exists (where it would be made)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def cmd_synth(args: argparse.Namespace) -> int:
    from clara.loader import load_base
    from clara_cli.common import progress

    dtype = model_dtype(args)
    if args.teacher_url and not args.teacher_model:
        raise ClaraError("--teacher-url needs --teacher-model (the model name to ask for)")
    if args.teacher_model and not args.teacher_url:  # (it was ignored: the local model asked)
        raise ClaraError(
            "--teacher-model needs --teacher-url (the OpenAI-compatible endpoint serving it)"
        )
    cm = None
    if args.cloze and (args.teacher_url or args.no_qa):
        raise ClaraError("--cloze writes its own questions: drop --teacher-url / --no-qa")
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # (found once every document was read, and a
        raise ClaraError(f"--out {out} is a file: give a folder for the run")  # teacher's
    # questions written: "File exists")
    if not os.access(_existing(out), os.W_OK):
        raise ClaraError(f"--out {out}: this user may not write in {_existing(out)}")
    earlier = [f.name for f in (out / "stage1.jsonl", out / "stage2.jsonl") if f.exists()]
    if earlier and not args.force:  # a teacher's questions can take hours to write again
        raise ClaraError(
            f"{out} already holds {' and '.join(earlier)} from an earlier run: give another "
            "--out, or --force to replace them"
        )
    if args.teacher_url or args.no_qa or args.cloze:
        base = load_base(args.model, dtype=dtype)
        tokenizer = base.tokenizer
    else:
        from clara.checkpoint import load_clara

        cm = load_clara(args.model, dtype=dtype)
        tokenizer = cm.tokenizer
    read = [c.text for c in read_chunks(args.docs, tokenizer, args.doc_max_tokens, args.overlap)]
    chunks = list(dict.fromkeys(read))  # a copied file would be its own negative
    if len(chunks) < len(read):
        print(f"{PROG}: {len(read) - len(chunks)} chunks repeat others (copied files): kept once",
              file=sys.stderr)  # fmt: skip
    if args.max_chunks:
        chunks = chunks[: args.max_chunks]
    if cm is not None and not args.quiet:
        print(f"{PROG}: note: {args.model} itself writes the questions (answers the chunk does "
              "not support are dropped); --cloze, or --teacher-url with a larger model, write "
              "better ones", file=sys.stderr)  # fmt: skip
    teacher = None
    if args.cloze:
        from training.cloze import cloze_teacher

        teacher = cloze_teacher(args.seed)
    elif not args.no_qa:
        teacher = (
            openai_teacher(args.teacher_url, args.teacher_model, os.environ.get(args.api_key_env))
            if args.teacher_url
            else local_teacher(cm)
        )
    stage1, stage2 = synthesize(
        chunks,
        teacher,
        questions_per_chunk=args.questions_per_chunk,
        candidates=args.candidates,
        seed=args.seed,
        progress=lambda it, n: progress(it, n, "teacher", unit="chunk", quiet=args.quiet),
    )
    n1 = write_jsonl(out / "stage1.jsonl", map(pretrain_to_json, stage1))
    print(f"{out / 'stage1.jsonl'}: {n1} records ({len(chunks)} paraphrase)")
    if stage2:
        n2 = write_jsonl(out / "stage2.jsonl", map(qa_to_json, stage2))
        print(f"{out / 'stage2.jsonl'}: {n2} records")
        short = sum(len(r.docs) < args.candidates for r in stage2)
        if short:
            print(
                f"{PROG}: warning: {short} of {n2} questions have fewer than --candidates "
                f"{args.candidates} candidate chunks ({len(chunks)} chunks in all): with one, "
                "joint's retrieval loss is zero and recall says nothing; synthesize from more "
                "documents",
                file=sys.stderr,
            )
    elif (out / "stage2.jsonl").exists():  # an earlier run's: not this data's questions
        (out / "stage2.jsonl").unlink()
        print(f"{out / 'stage2.jsonl'}: removed (an earlier run's; this one wrote no questions)")
    elif teacher is not None:
        print("the teacher produced no usable question/answer pairs", file=sys.stderr)
    return 0
