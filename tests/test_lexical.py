"""The full-text side of a collection: identifier terms, FTS5-safe queries, add / remove /
compact / rebuild keeping it in step, and the upgrade of an index made without it.

Random vectors with a tiny shape (n_mem=4, d=8), as in test_store.py; no model.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from indexing import lexical
from indexing.durable import WriterLock
from indexing.store import ChunkRecord, Collection
from tests.test_server_harness import ROOT
from tests.tiny import STORE_D, STORE_MANIFEST, STORE_N_MEM

N_MEM, D = STORE_N_MEM, STORE_D
MANIFEST = STORE_MANIFEST
DOCS = {
    "git-notes": [
        "Use git branch --set-upstream-to=origin/main to track a remote branch.",
        "Since 2.13 the gc.aggressiveDepth default is 50 instead of 250.",
    ],
    "release": [
        "Release v1.8.0 fixes the parser in src/clara/model.py and adds max_tokens.",
        "The installer now asks before it overwrites your configuration files.",
    ],
    "cooking": ["Boil the pasta for nine minutes, then drain it and add the sauce."],
}
CJK = {
    "tokyo": ["東京の日本語テキストには保証期間が二年と書いてあります。"],
    "beijing": ["北京的图书馆周一闭馆，其余时间开放到晚上九点。"],
}


def add(col: Collection, name: str, context: str = "") -> str:
    texts = {**DOCS, **CJK}[name]
    vecs = np.random.default_rng(len(name)).standard_normal((len(texts), N_MEM, D))
    records = [ChunkRecord(t, 1, 1, 10, context) for t in texts]
    return col.add_document(f"/docs/{name}.txt", name, f"sha-{name}", records, vecs)


def top_docs(col: Collection, query: str, k: int = 3) -> list[str]:
    hits = col.search_lexical(query, k) or []
    chunks = {c.id: c.doc_id for c in col.chunks([i for i, _ in hits])}
    names = {d.id: d.name for d in col.list_documents()}
    return list(dict.fromkeys(names[chunks[i]] for i, _ in hits))


@pytest.fixture
def col(tmp_path: Path):
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    for name in DOCS:
        add(c, name)
    yield c
    c.close()


def test_terms_keep_identifiers_whole_and_in_parts():
    got = lexical.terms("Run `git branch --set-upstream-to` (see gc.aggressiveDepth).")
    assert "set-upstream-to" in got and {"set", "upstream", "to"} <= set(got)
    assert "gc.aggressivedepth" in got and {"gc", "aggressive", "depth"} <= set(got)
    assert lexical.terms("Since 2.13, v1.8.0.") == [
        *("since", "2.13", "2", "13", "v1.8.0", "v1", "8", "0")
    ]
    assert "src/clara/model.py" in lexical.terms("edit src/clara/model.py now")
    assert lexical.terms("the end.") == ["the", "end"]  # a full stop is not part of a word
    assert lexical.terms("東京abc と 日本語") == ["東京", "abc", "と", "日本", "本語"]


@pytest.mark.parametrize(
    "query, doc",
    [
        ("--set-upstream-to", "git-notes"),
        ("what does gc.aggressiveDepth do", "git-notes"),
        ("changes in 2.13", "git-notes"),
        ("v1.8.0", "release"),
        ("src/clara/model.py", "release"),
        ("max_tokens", "release"),
        ("how long to boil pasta?", "cooking"),
        ("installer overwriting configuration", "release"),  # stemmed
    ],
)
def test_identifier_and_word_queries_find_their_document(col: Collection, query: str, doc: str):
    assert top_docs(col, query)[0] == doc


def test_words_inside_runs_of_cjk_characters_are_found(col: Collection):
    for name in CJK:
        add(col, name)
    for query, doc in [
        ("日本語", "tokyo"),
        ("保証期間は?", "tokyo"),
        ("图书馆什么时候闭馆", "beijing"),
    ]:
        assert top_docs(col, query)[0] == doc, query


WORLD = {  # (an audit's cases; each missed its document before)
    "korean-nfd": unicodedata.normalize("NFD", "무궁화는 대한민국의 나라꽃이다."),
    "french-nfd": unicodedata.normalize("NFD", "Le château accueille chaque élève."),
    "fullwidth": "２０２４年の製品番号はＡＢＣ１２３、電話は０３－１２３４。ｶﾀｶﾅ表記。",
    "arabic": "وضعت اَلْكِتَابُ على الطَّاوِلَةِ",
    "hebrew": "שָׁלוֹם לכולם",
    "hindi": "हिन्दी एक भाषा है",
    "german": "Die Straße ist lang.",
    "ligature": "The ﬁnancial report.",
    "alexandria": "تقع مدينة الإسكندرية على البحر، وفيها المدرسة والمستشفى",
    "persian": "این کتابخانه یک ساختمان بزرگ است",
    "thai": "กรุงเทพมหานครเป็นเมืองหลวง",
    "laughing": "재밌다 ㅋㅋㅋ 정말",
}


@pytest.mark.parametrize(
    "query, doc",
    [
        ("무궁화", "korean-nfd"),
        (unicodedata.normalize("NFD", "château"), "french-nfd"),
        ("chateau eleve", "french-nfd"),
        ("2024年", "fullwidth"),
        ("abc123", "fullwidth"),
        ("カタカナ", "fullwidth"),
        ("الكتاب الطاولة", "arabic"),
        ("שלום", "hebrew"),
        ("हिन्दी", "hindi"),
        ("STRASSE", "german"),
        ("financial", "ligature"),
        ("الاسكندرية", "alexandria"),  # (a second pass: letters typed another way)
        ("المدرسه مستشفي", "alexandria"),
        ("كتابخانه يك", "persian"),  # on an Arabic keyboard
        ("กรุงเทพ", "thai"),
        ("ㅋㅋ", "laughing"),
    ],
)
def test_text_in_any_form_or_script_finds_its_document(tmp_path: Path, query: str, doc: str):
    with Collection.open(tmp_path, "w", manifest=MANIFEST, create=True) as col:
        for i, (name, text) in enumerate(WORLD.items()):
            vecs = np.random.default_rng(i).standard_normal((1, N_MEM, D))
            col.add_document(f"/docs/{name}.txt", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 10)], vecs)  # fmt: skip
        assert top_docs(col, query)[:1] == [doc], lexical.terms(query)


def test_a_long_question_searches_with_its_rarest_terms(col: Collection):
    """A 58-character Chinese question made 57 character pairs; the first 48 were kept and
    the one naming its subject, at the end, was cut: nothing was found."""
    add(col, "beijing")
    question = "请根据我上传的所有文件内容仔细地回答下面这个问题并且尽量详细一些说明清楚我想知道的事情其实很简单也就是图书馆在哪一天闭馆"
    assert len(lexical.query_terms(question)) > lexical.MAX_QUERY_TERMS
    assert top_docs(col, question)[:1] == ["beijing"]


@pytest.mark.parametrize(
    "query",
    ['"', '"unbalanced', "a -b", "*", "pasta*", "col:pasta", "(pasta", "pasta)", "NEAR(a b)",
     "AND", "OR pasta OR", "NOT", "^pasta", "{pasta}", "pasta + sauce", "'quoted'", "-- ::"],
)  # fmt: skip
def test_fts5_syntax_characters_never_raise(col: Collection, query: str):
    hits = col.search_lexical(query)
    assert hits is None or isinstance(hits, list)
    if "pasta" in query:
        assert top_docs(col, query) == ["cooking"]


def test_questions_without_usable_words_give_none(col: Collection):
    for query in ["", "   ", "?!", "what is it", "-- ::"]:
        assert col.search_lexical(query) is None
    assert lexical.match_query("What is the pasta?") == '"pasta"'


KEYWORD_DOCS = {
    "with": "The with statement wraps a block in the methods of a context manager.",
    "if": "The if statement runs the first suite whose condition is true; else runs otherwise.",
    "membership": "The in operator tests membership: x in s is true when s holds x.",
    "loops": "A for or while loop may end early; this statement exits the loop.",
    "calls": "Calls with keyword arguments match them to parameters by name, with defaults.",
}


@pytest.mark.parametrize(
    "query, doc",
    [
        ("What does the with statement do?", "with"),
        ("How does the if statement pick its branch?", "if"),
        ("how does the in operator work", "membership"),
        ("what does `with` do", "with"),  # quoted: the word asked about
        ("the 'if' keyword", "if"),
    ],
)
def test_a_keyword_that_is_a_common_word_is_searched(tmp_path: Path, query: str, doc: str):
    """Common words are left out of questions, except where they name the keyword asked
    about: quoted, or as a phrase with "statement", "operator" or "clause"."""
    c = Collection.open(tmp_path, "main", manifest=MANIFEST, create=True)
    rng = np.random.default_rng(0)
    for name, text in KEYWORD_DOCS.items():
        vecs = rng.standard_normal((1, N_MEM, D))
        c.add_document(f"/docs/{name}.md", name, f"sha-{name}", [ChunkRecord(text, 1, 1, 10)], vecs)
    assert lexical.query_terms("the with statement") == ["with statement", "statement"]
    assert top_docs(c, query)[0] == doc
    c.close()


def test_remove_compact_and_rebuild_keep_the_text_index_in_step(col: Collection):
    assert top_docs(col, "pasta") == ["cooking"]
    doc = col.find_by_sha("sha-cooking")
    col.remove_document(doc.id)
    assert col.search_lexical("pasta") == []
    col.remove_document(col.find_by_sha("sha-git-notes").id)  # > 25% dead: compacts
    assert col.stats()["dead_rows"] == 0
    assert top_docs(col, "v1.8.0") == ["release"] and col.search_lexical("upstream") == []
    add(col, "cooking")
    col.rebuild()
    assert top_docs(col, "pasta sauce") == ["cooking"]
    assert col.stats()["lexical_chunks"] == col.stats()["chunks"] == 3


def test_context_is_searchable_but_not_part_of_the_text(tmp_path: Path):
    with Collection.open(tmp_path, "c", manifest=MANIFEST, create=True) as col:
        add(col, "cooking", context="Grandma's Kitchen / Italian dishes")
        assert top_docs(col, "grandma italian") == ["cooking"]
        chunk = col.chunks([col.search_lexical("grandma")[0][0]])[0]
        assert chunk.text == DOCS["cooking"][0]
        assert chunk.contextual_text == "Grandma's Kitchen / Italian dishes\n" + chunk.text


def make_old(root: Path) -> None:
    """Turn a collection into one made before the full-text table existed."""
    db = sqlite3.connect(root / "main" / "meta.sqlite")
    db.execute("DROP TABLE chunks_fts")
    db.execute("DELETE FROM state WHERE key='lexical'")
    db.execute("ALTER TABLE chunks DROP COLUMN context")
    db.commit()
    db.close()


def test_an_old_index_gains_the_text_index_on_open(tmp_path: Path):
    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        for name in DOCS:
            add(col, name)
    make_old(tmp_path)
    with Collection.open(tmp_path, "main", readonly=True) as old:
        assert old.search_lexical("pasta") is not None  # a reader upgrades it when it can
        assert len(old.notes) == 1 and "built its full-text index anew (5 chunks)" in old.notes[0]
    make_old(tmp_path)
    with Collection.open(tmp_path, "main", manifest=MANIFEST) as writer:
        assert len(writer.notes) == 1 and top_docs(writer, "v1.8.0") == ["release"]
        assert writer.stats()["lexical_chunks"] == 5
    with Collection.open(tmp_path, "main", manifest=MANIFEST) as again:
        assert again.notes == []  # once only


def test_clara_index_says_the_upgrade_once(tmp_path: Path):
    """An upgrade audit: every command on a pre-0.2.2 index printed the rebuild line twice
    (once by Python's last-resort log handler, once as "clara-index: ...")."""
    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        add(col, "cooking")
    make_old(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "indexing.cli", "collections", "--index", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "full-text index anew" in line]
    assert len(lines) == 1 and lines[0].startswith("clara-index: collection 'main'"), run.stderr


def test_a_reader_that_cannot_upgrade_searches_dense_only(tmp_path: Path):
    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        add(col, "cooking")
    make_old(tmp_path)
    lock = WriterLock(tmp_path / "main", "test")  # an older writer holds the collection
    try:
        reader = Collection.open(tmp_path, "main", readonly=True)
        assert not reader.lexical and reader.search_lexical("pasta") is None
        assert "clara-index rebuild" in reader.notes[0]
        assert len(reader.search(np.ones((N_MEM, D)), k=1)[0]) == 1
    finally:
        lock.release()
    with Collection.open(tmp_path, "main", manifest=MANIFEST):  # a writer upgrades it ...
        pass
    reader.refresh()  # ... and the reader, still open, searches words again
    assert reader.lexical and reader.search_lexical("pasta") is not None
    reader.close()


def test_clara_index_says_so_in_one_line_when_it_upgrades(tmp_path: Path, capsys):
    from indexing.cli import main

    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        add(col, "cooking")
    make_old(tmp_path)
    assert main(["list", "--index", str(tmp_path), "--collection", "main"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["clara-index: collection 'main': built its full-text index anew (1 chunks): it "
                   "was missing or made by an older clara (once only)"]  # fmt: skip
    assert main(["list", "--index", str(tmp_path), "--collection", "main"]) == 0
    assert capsys.readouterr().err == ""


def test_the_document_name_and_context_count_more_than_the_text(tmp_path: Path):
    vecs = np.zeros((1, N_MEM, D))
    with Collection.open(tmp_path, "c", manifest=MANIFEST, create=True) as col:
        text = "Pasta, pasta and more pasta: the sauce recipes are below."
        col.add_document(None, "kitchen.txt", "s1", [ChunkRecord(text)], vecs + 1)
        col.add_document(None, "pasta-recipes.md", "s2", [ChunkRecord("Boil it.")], vecs + 2)
        col.add_document(None, "x.txt", "s3", [ChunkRecord("Water.", context="Sauce Recipes")],
                         vecs + 3)  # fmt: skip
        assert top_docs(col, "pasta recipes", k=3)[0] == "pasta-recipes.md"
        assert top_docs(col, "sauce recipes", k=3)[0] == "x.txt"


def test_a_full_text_table_of_an_older_version_is_rebuilt(tmp_path: Path):
    with Collection.open(tmp_path, "main", manifest=MANIFEST, create=True) as col:
        add(col, "cooking")
    db = sqlite3.connect(tmp_path / "main" / "meta.sqlite")
    db.execute("UPDATE state SET value=1 WHERE key='lexical'")
    db.commit()
    db.close()
    with Collection.open(tmp_path, "main", manifest=MANIFEST) as col:
        assert "built its full-text index anew (1 chunks)" in col.notes[0]
        assert top_docs(col, "pasta") == ["cooking"]


def test_frequent_terms_are_left_out_past_the_postings_budget(tmp_path: Path, monkeypatch):
    assert lexical.prune(["common", "rare", "mid", "absent"], [100, 5, 30, 0]) == [
        "common", "rare", "mid"
    ]  # fmt: skip
    monkeypatch.setattr(lexical, "POSTINGS_BUDGET", 50)
    assert lexical.prune(["common", "rare", "mid", "absent"], [100, 5, 30, 0]) == ["rare", "mid"]
    monkeypatch.setattr(lexical, "MIN_TERMS", 1)
    with Collection.open(tmp_path, "c", manifest=MANIFEST, create=True) as col:
        texts = [f"a common word, number {i}" for i in range(60)] + ["common zebra"]
        records = [ChunkRecord(t) for t in texts]
        col.add_document(None, "many.txt", "s", records, np.zeros((61, N_MEM, D)) + 1)
        hits = col.search_lexical("common zebra", k=10)  # 'common' (61 chunks) is dropped
        assert len(hits) == 1 and col.chunks([hits[0][0]])[0].text == "common zebra"
        assert col.search_lexical("giraffe", k=10) == []  # no chunk holds it
