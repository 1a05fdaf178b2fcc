"""A synthetic world of invented people and towns: documents, questions, held-out facts.

Every entity has a unique invented name and four attributes; its one document states one to
three of them. A share of the documents is HELD OUT: they are in the collection, but neither
they nor questions about them are ever trained on. A model that reads their compressed memory
can answer; one that does not has nothing to go on (values are invented words and numbers).

    world = make_world(n_people=1000, n_towns=200, seed=0)
    world.docs                      # the collection
    world.pretrain_records()        # stage 1: paraphrase + QA records of the training docs
    world.qa_records("train", ...)  # stages 2-3: {question, docs (candidates), answer, pos_index}
    world.qa_records("test", ...)   # held-out questions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.data import PretrainRecord, QARecord

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "st", "sk", "th", "sh", "ch"]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "th"]

PROFESSIONS = ["painter", "baker", "sailor", "weaver", "miner", "poet", "farmer", "tailor",
               "potter", "smith", "brewer", "healer", "hunter", "scribe", "mason", "carpenter",
               "fisher", "singer", "merchant", "builder", "glassblower", "jeweller", "cook",
               "shepherd"]  # fmt: skip
PETS = ["cat", "dog", "parrot", "goat", "owl", "rabbit", "tortoise", "ferret", "pony", "crow",
        "hedgehog", "lizard", "mule", "goose", "toad", "falcon"]  # fmt: skip
PRODUCTS = ["cheese", "bridges", "wool", "glass", "apples", "boats", "bells", "salt", "honey",
            "lanterns", "carpets", "clocks", "wine", "paper", "pottery", "horses"]  # fmt: skip

# attribute -> (fact templates, question templates); {n} = entity name, {v} = value
PERSON = {
    "job": (["{n} works as a {v}."], ["What does {n} work as?", "What is the job of {n}?"]),
    "home": (["{n} lives in {v}."], ["Where does {n} live?", "In which town does {n} live?"]),
    "born": (["{n} was born in {v}."], ["In what year was {n} born?", "When was {n} born?"]),
    "pet": (
        ["{n} keeps a {v} as a pet."],
        ["What pet does {n} keep?", "Which animal does {n} keep?"],
    ),
}
TOWN = {
    "river": (["{n} lies on the river {v}."], ["On which river does {n} lie?", "Which river flows through {n}?"]),
    "founded": (["{n} was founded in {v}."], ["When was {n} founded?", "In what year was {n} founded?"]),
    "region": (["{n} is in the region of {v}."], ["In which region is {n}?", "Which region is {n} in?"]),
    "famous": (["{n} is famous for its {v}."], ["What is {n} famous for?", "What is {n} known for?"]),
}  # fmt: skip


@dataclass
class Fact:
    entity: str
    kind: str  # "person" | "town"
    attr: str
    value: str
    doc: int  # index of the document that states it
    split: str = "train"  # "train" | "test"

    def sentence(self) -> str:
        table = PERSON if self.kind == "person" else TOWN
        return table[self.attr][0][0].format(n=self.entity, v=self.value)

    def questions(self) -> list[str]:
        table = PERSON if self.kind == "person" else TOWN
        return [q.format(n=self.entity) for q in table[self.attr][1]]


@dataclass
class World:
    docs: list[str]
    facts: list[Fact]
    doc_facts: list[list[int]]  # fact indices per document
    seed: int = 0
    names: list[str] = field(default_factory=list)
    held_out: set[int] = field(default_factory=set)  # documents never trained on
    pools: Pools | None = None

    def synthetic(self, n_docs: int, seed: int) -> World:
        """Fresh documents over this world's names and values with RANDOM facts (a held-out
        document's true facts only by chance): reading practice that cannot be memorised,
        since no pairing of a name with a value is stable across documents."""
        rng = np.random.default_rng([self.seed, 3, seed])
        pools = self.pools
        kinds = [(p, "person") for p in pools.people] + [(t, "town") for t in pools.towns]
        entities = [kinds[int(i)] for i in rng.integers(len(kinds), size=n_docs)]
        docs, facts, doc_facts = _documents(rng, pools, entities)
        return World(docs, facts, doc_facts, self.seed * 1000 + seed, self.names, set(), pools)

    @property
    def train_docs(self) -> list[int]:
        return [i for i in range(len(self.docs)) if i not in self.held_out]

    def split(self, name: str) -> list[Fact]:
        return [f for f in self.facts if f.split == name]

    def pretrain_records(self, qa: bool = True) -> list[PretrainRecord]:
        """A paraphrase record per training document, plus one QA record per training fact."""
        out = [PretrainRecord("paraphrase", self.docs[i]) for i in self.train_docs]
        if qa:
            rng = np.random.default_rng([self.seed, 1])
            for f in self.split("train"):
                q = f.questions()[int(rng.integers(2))]
                out.append(PretrainRecord("qa", self.docs[f.doc], [q], [f.value]))
        return out

    def qa_records(
        self,
        split: str,
        n_docs: int = 5,
        all_templates: bool = False,
        seed: int = 0,
        hard: float = 0.0,
    ) -> list[QARecord]:
        """Questions of `split` with `n_docs` candidate documents (the gold one at a random
        place, the others random documents; training documents only for "train") and
        `pos_index`. `hard`: the share of the other candidates drawn from documents that state
        the same attribute (hard negatives: only the name tells them from the gold one)."""
        rng = np.random.default_rng([self.seed, 2, seed, 0 if split == "train" else 1])
        docs_ok = self.train_docs if split == "train" else range(len(self.docs))
        pool = np.array(docs_ok)
        ok = set(docs_ok)
        stating: dict[str, list[int]] = {}
        for f in self.facts:
            if f.doc in ok:
                stating.setdefault(f.attr, []).append(f.doc)
        by_attr = {a: np.array(d) for a, d in stating.items()}
        out = []
        for f in self.split(split):
            qs = f.questions()
            for q in qs if all_templates else [qs[int(rng.integers(len(qs)))]]:
                others: list[int] = []
                same = by_attr.get(f.attr, pool)
                while len(others) < n_docs - 1:  # distinct documents, not the gold one
                    src = same if hard and len(same) > n_docs and rng.random() < hard else pool
                    o = int(src[rng.integers(len(src))])
                    if o != f.doc and o not in others:
                        others.append(o)
                docs = others + [f.doc]
                rng.shuffle(docs)
                out.append(
                    QARecord(q, [self.docs[i] for i in docs], [f.value], [docs.index(f.doc)])
                )
        return out

    def registry(self, per_line: int = 16) -> list[str]:
        """Lines listing every name (no facts): a base model may know the words, not the facts."""
        names = list(self.names)
        return [
            "Names: " + ", ".join(names[i : i + per_line]) + "."
            for i in range(0, len(names), per_line)
        ]

    def texts(self) -> list[str]:
        """Every string the world can produce (for building a vocabulary): its documents and
        questions, and every value a synthetic document can draw (all years included)."""
        years = [str(y) for y in range(1000, 2000)]
        out = list(self.docs) + [" ".join(PROFESSIONS + PETS + PRODUCTS + years + self.names)]
        for f in self.facts:
            out += f.questions() + [f.value]
        return out


def _names(rng: np.random.Generator, n: int, taken: set[str], syllables=(2, 3)) -> list[str]:
    out = []
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        parts = [_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                 for _ in range(k)]  # fmt: skip
        name = ("".join(parts) + _CODAS[rng.integers(len(_CODAS))]).capitalize()
        if name not in taken and len(name) >= 4:
            taken.add(name)
            out.append(name)
    return out


@dataclass
class Pools:
    """Names and values a world draws from."""

    people: list[str]
    towns: list[str]
    rivers: list[str]
    regions: list[str]
    max_facts: int = 3


def _documents(rng: np.random.Generator, pools: Pools, entities: list[tuple[str, str]]):
    """One document per (name, kind) with 1..max_facts random facts: (docs, facts, doc_facts)."""
    facts: list[Fact] = []
    docs: list[str] = []
    doc_facts: list[list[int]] = []
    for name, kind in entities:
        if kind == "person":
            values = {
                "job": PROFESSIONS[rng.integers(len(PROFESSIONS))],
                "home": pools.towns[rng.integers(len(pools.towns))],
                "born": str(int(rng.integers(1700, 2000))),
                "pet": PETS[rng.integers(len(PETS))],
            }
        else:
            values = {
                "river": pools.rivers[rng.integers(len(pools.rivers))],
                "founded": str(int(rng.integers(1000, 1900))),
                "region": pools.regions[rng.integers(len(pools.regions))],
                "famous": PRODUCTS[rng.integers(len(PRODUCTS))],
            }
        n = int(rng.integers(1, pools.max_facts + 1))
        attrs = [list(values)[i] for i in rng.permutation(len(values))[:n]]
        idx = []
        for a in attrs:
            facts.append(Fact(name, kind, a, values[a], len(docs)))
            idx.append(len(facts) - 1)
        docs.append(" ".join(facts[i].sentence() for i in idx))
        doc_facts.append(idx)
    return docs, facts, doc_facts


def make_world(
    n_people: int = 1000,
    n_towns: int = 200,
    n_rivers: int = 30,
    n_regions: int = 20,
    max_facts: int = 3,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> World:
    """Invent a world; documents state 1..max_facts facts of one entity each; a
    `test_fraction` of the documents is held out."""
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    pools = Pools(
        _names(rng, n_people, taken),
        _names(rng, n_towns, taken),
        _names(rng, n_rivers, taken),
        _names(rng, n_regions, taken),
        max_facts,
    )
    entities = [(p, "person") for p in pools.people] + [(t, "town") for t in pools.towns]
    entities = [entities[int(e)] for e in rng.permutation(len(entities))]
    docs, facts, doc_facts = _documents(rng, pools, entities)
    held_out = {int(i) for i in rng.permutation(len(docs))[: int(round(test_fraction * len(docs)))]}
    for f in facts:
        if f.doc in held_out:
            f.split = "test"
    names = pools.people + pools.towns + pools.rivers + pools.regions
    return World(docs, facts, doc_facts, seed, names, held_out, pools)
