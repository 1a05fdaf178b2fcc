"""Training data for the GPU run, tokenised by clara itself (prompt layout from clara.prompt).

    .venv/bin/python docs/runs/2026-12-04-h200/prep.py --out .gpu/data.npz

Writes one npz of token arrays the torch trainer (train_torch.py) reads, so the prompts it
trains on are token for token the ones clara serves. Sources: the 800 training documents of
Apple's ml-clara example data (its fixed split: lines with i % 5 == 0 are never read here) and
their 6175 questions; real prose every Linux machine with Python has (Python's documentation
topics, the installed packages' descriptions, the manual pages), chunked to <= 256 tokens.
Example kinds: 0 reconstruction (paraphrase prompt -> the chunk), 1 QA reading memory (the
question's document alone or with TF-IDF hard negatives), 2 QA in clara's mixed layout (one
chunk as text, the others as memory), 3 cloze QA (training.cloze) over the prose chunks.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import clara  # noqa: E402,F401  (OpenBLAS before mlx)
from clara import prompt  # noqa: E402
from clara.loader import load_base  # noqa: E402
from clara.model import ClaraConfig, ClaraModel  # noqa: E402
from clara.prompt import paraphrase_messages  # noqa: E402
from training.batches import generator_example  # noqa: E402
from training.cloze import cloze_pairs  # noqa: E402
from training.default_recipe import default_data, split_example  # noqa: E402
from training.synth import tfidf_neighbours  # noqa: E402

_GROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\\*\(..|\\\*.|\\s[+-]?\d|\\&|\\e|\\\(..")


def man_text(path: str) -> str:
    """A manual page's prose, roughly: macro lines dropped (their words kept for .B/.I)."""
    try:
        raw = gzip.open(path, "rt", errors="replace").read()
    except (OSError, EOFError):
        return ""
    out = []
    for line in raw.splitlines():
        if line.startswith((".B ", ".I ", ".BR ", ".IR ", ".BI ", ".RB ", ".IB ")):
            line = line.split(" ", 1)[1].replace('"', "")
        elif line.startswith((".", "'")):
            out.append("\n" if line[:3] in (".PP", ".SH", ".P", ".LP", ".TP", ".IP") else "")
            continue
        line = _GROFF_ESC.sub("", line).replace("\\-", "-").replace("\\", "")
        out.append(line)
    return re.sub(r"\n{2,}", "\n\n", "\n".join(out))


def metadata_text(path: str) -> str:
    raw = Path(path).read_text(errors="replace")
    return raw.split("\n\n", 1)[1] if "\n\n" in raw else ""


def prose(par: str) -> bool:
    letters = sum(c.isalpha() or c.isspace() for c in par)
    return len(par) >= 200 and letters / len(par) > 0.85 and not re.search(r"[{};=<>|]{2}", par)


def chunks_of(text: str, tok, limit: int) -> list[str]:
    """Prose paragraphs merged into chunks of at most `limit` tokens (whole paragraphs)."""
    pars = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    pars = [p for p in pars if prose(p)]
    out, cur, n = [], [], 0
    for p, ids in zip(pars, tok(pars, add_special_tokens=False)["input_ids"] if pars else []):
        k = len(ids)
        if k > limit:
            continue
        if cur and n + k > limit:
            out.append("\n".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += k
        if n >= limit * 0.6:
            out.append("\n".join(cur))
            cur, n = [], 0
    if cur and n >= 48:
        out.append("\n".join(cur))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--man-pages", type=int, default=6000)
    p.add_argument("--recon", type=int, default=24000, help="reconstruction examples")
    p.add_argument("--cloze", type=int, default=14000, help="cloze QA examples")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    base = load_base(dtype="float32")
    cm = ClaraModel(base, ClaraConfig(center_memory=True))
    tok = cm.tokenizer._tokenizer if hasattr(cm.tokenizer, "_tokenizer") else cm.tokenizer

    train, _held, _ = split_example(default_data())
    docs = [r["docs"][0] for r in train]
    from pydoc_data.topics import topics

    texts = list(topics.values())
    texts += [
        metadata_text(f)
        for f in glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/*.dist-info/METADATA"))
    ]
    mans = sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))
    rng.shuffle(mans)
    texts += [man_text(f) for f in mans[: args.man_pages]]
    pool = []
    for t in texts:
        pool += chunks_of(t, tok, 240)
    pool = list(dict.fromkeys(pool))
    rng.shuffle(pool)
    print(f"{len(pool)} prose chunks from {len(texts)} texts", file=sys.stderr)

    table: dict[str, int] = {}

    def doc_id(text: str) -> int:
        return table.setdefault(text, len(table))

    examples = []  # (kind, GenExample, [doc ids])

    def add(kind: int, msgs: list[dict], answer: str, blocks: list[str]) -> None:
        ex = generator_example(cm, msgs, answer, len(blocks))
        if ex.n_blocks != len(blocks):
            return
        examples.append((kind, ex, [doc_id(b) for b in blocks]))

    para = paraphrase_messages()
    recon = pool[: args.recon] + docs
    for c in recon:
        add(0, para, c, [c])
    qs = [(q, a, i) for i, r in enumerate(train) for q, a in zip(r["question"], r["answers"])]
    for lo in range(0, len(qs), 500):
        part = qs[lo : lo + 500]
        near = tfidf_neighbours([q for q, _, _ in part], docs, 6)
        for (q, a, src), nn in zip(part, near):
            negs = [int(j) for j in nn if j != src][:4]
            add(1, prompt.answer_messages(q, prompt.background(1)), a, [docs[src]])
            k = rng.choice([2, 3, 5])
            cands = [src] + negs[: k - 1]
            rng.shuffle(cands)
            add(
                1,
                prompt.answer_messages(q, prompt.background(len(cands))),
                a,
                [docs[j] for j in cands],
            )
            # mixed: the best-ranked chunk as text (the gold one half the time), the rest memory
            lead = src if rng.random() < 0.5 else negs[0]
            rest = [j for j in [src] + negs[:2] if j != lead]
            rng.shuffle(rest)
            bg = prompt.clean(docs[lead]) + prompt.SEP + prompt.background(len(rest))
            add(2, prompt.answer_messages(q, bg), a, [docs[j] for j in rest])
    n_cloze = 0
    for c in pool:
        if n_cloze >= args.cloze:
            break
        for q, a in cloze_pairs(c, 2, args.seed):
            blocks = [c]
            if rng.random() < 0.4:
                blocks.append(rng.choice(pool))
                rng.shuffle(blocks)
            add(3, prompt.answer_messages(q, prompt.background(len(blocks))), a, blocks)
            n_cloze += 1
    rng.shuffle(examples)

    doc_texts = list(table)
    doc_ids = cm.tokenize(doc_texts)
    doc_ids = [ids or [tok.eos_token_id] for ids in doc_ids]  # as Stage._tokenize_docs
    q_ids = cm.tokenize([q for q, _, _ in qs])
    q_doc = [table[docs[src]] for _, _, src in qs]

    def cat(lists, dtype):
        off = np.cumsum([0] + [len(x) for x in lists]).astype(np.int64)
        return np.concatenate([np.asarray(x, dtype) for x in lists]), off

    doc_tok, doc_off = cat(doc_ids, np.uint16)
    gen_tok, gen_off = cat([e.tokens for _, e, _ in examples], np.uint16)
    gen_slot, _ = cat([e.slots for _, e, _ in examples], np.int16)
    q_tok, q_off = cat(q_ids, np.uint16)
    gen_docs = np.full((len(examples), 5), -1, np.int32)
    for i, (_, _, ds) in enumerate(examples):
        gen_docs[i, : len(ds)] = ds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        doc_tok=doc_tok, doc_off=doc_off,
        gen_tok=gen_tok, gen_off=gen_off, gen_slot=gen_slot,
        gen_nprompt=np.array([e.n_prompt for _, e, _ in examples], np.int32),
        gen_kind=np.array([k for k, _, _ in examples], np.int8),
        gen_docs=gen_docs,
        q_tok=q_tok, q_off=q_off, q_doc=np.array(q_doc, np.int32),
        train_doc_ids=np.array([table[d] for d in docs], np.int32),
        bos=np.array([tok.bos_token_id]),
        eos=np.array([tok.eos_token_id]),
    )  # fmt: skip
    kinds = np.bincount([k for k, _, _ in examples], minlength=4)
    print(
        f"{len(examples)} examples (recon/qa/mixed/cloze {kinds.tolist()}), {len(doc_texts)} docs,"
        f" {len(gen_tok)} generator tokens, {len(q_ids)} questions",
        file=sys.stderr,
    )
    json.dump({"examples": len(examples), "kinds": kinds.tolist(), "docs": len(doc_texts)},
              open(args.out.with_suffix(".json"), "w"))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
