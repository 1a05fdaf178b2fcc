"""The synthetic world and the from-scratch tiny model builder."""

from __future__ import annotations

from clara.loader import load_base
from training.tinymodel import build_tiny_llama, build_word_tokenizer
from training.world import make_world


def test_world_shape_and_held_out_facts():
    w = make_world(n_people=80, n_towns=20, seed=3)
    assert len(w.docs) == 100 and len(set(w.docs)) == 100
    assert all(1 <= len(f) <= 3 for f in w.doc_facts)
    test, train = w.split("test"), w.split("train")
    assert len(w.held_out) == 15 and len(train) + len(test) == len(w.facts)
    assert {f.doc for f in test} == w.held_out
    for f in w.facts:  # every fact is stated in its document
        assert f.sentence() in w.docs[f.doc] and f.value in w.docs[f.doc]
    # held-out questions are never among the training records
    trained = {r.question + "|" + r.answers[0] for r in w.qa_records("train", all_templates=True)}
    trained |= {q + "|" + a for r in w.pretrain_records() for q, a in zip(r.questions, r.answers)}
    held = w.qa_records("test")
    assert held and all(r.question + "|" + r.answers[0] not in trained for r in held)
    # ... and neither are their documents, in any training record
    seen = {d for r in w.qa_records("train", n_docs=8, all_templates=True) for d in r.docs}
    seen |= {r.doc for r in w.pretrain_records()}
    assert not seen & {w.docs[i] for i in w.held_out}
    assert all(n in " ".join(w.registry()) for n in w.names)
    # candidates hold the gold document exactly once, where pos_index says
    for r in w.qa_records("train", n_docs=5):
        assert len(r.docs) == 5 and r.answers[0] in r.docs[r.pos_index[0]]
    assert make_world(80, 20, seed=3).docs == w.docs  # deterministic


def test_hard_negatives_state_the_asked_attribute():
    w = make_world(n_people=160, n_towns=40, seed=1)
    stating = {
        a: {w.docs[f.doc] for f in w.facts if f.attr == a} for a in {f.attr for f in w.facts}
    }
    fact = {(q, f.value): f.attr for f in w.split("train") for q in f.questions()}

    def share(records):
        hits = [d in stating[fact[(r.question, r.answers[0])]] for r in records for d in r.docs]
        return sum(hits) / len(hits)

    hard = w.qa_records("train", n_docs=8, hard=1.0)
    assert share(hard) == 1.0  # every candidate states the attribute asked about
    assert share(w.qa_records("train", n_docs=8)) < 0.7  # random candidates mostly do not
    for r in hard:  # still the gold document exactly once, where pos_index says
        assert len(set(r.docs)) == 8 and r.answers[0] in r.docs[r.pos_index[0]]
    assert w.qa_records("train", hard=0.0) == w.qa_records("train")  # same draws when off


def test_word_tokenizer_and_tiny_llama(tmp_path):
    w = make_world(n_people=30, n_towns=10)
    path = build_word_tokenizer(tmp_path / "m", w.texts())
    build_tiny_llama(path, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    base = load_base(path, dtype=None)
    tok = base.tokenizer
    ids = tok.encode(w.docs[0], add_special_tokens=False)
    assert len(ids) == len(w.docs[0].replace(".", " .").split())  # one token per word
    assert tok.decode(ids) == w.docs[0]
    assert tok.unk_token_id not in ids
    rendered = tok.apply_chat_template(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert rendered == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    assert base.config["vocab_size"] == len(tok.get_vocab())
