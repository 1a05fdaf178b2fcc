"""The two real document sets of bench/bench_retrieval.py, written out as files for clara-index.

apple: Apple's ml-clara example stage-1 data (`CLARA_EXAMPLE_DATA`, see apple_path),
    1000 encyclopedia-style documents; the questions of the held-out documents (0-based line
    % 5 == 0), each answered by its own document.
pydoc: Python's documentation topics (`pydoc_data.topics`, on every machine) up to 9000
    characters (65 of them), with questions written for this benchmark that name their topic
    the way users do; each is answered in one topic.
"""

from __future__ import annotations

import json
from pathlib import Path


def apple_path() -> Path:
    """Apple's ml-clara example data: $CLARA_EXAMPLE_DATA, or clara-example-pretrain.jsonl in a
    shared/data folder beside the checkout (training.default_recipe.default_data)."""
    from training.default_recipe import default_data

    path = default_data()
    if not path.exists():
        raise SystemExit(f"{path} not found: give the example data's path in CLARA_EXAMPLE_DATA")
    return path


PYDOC_MAX_CHARS = 9000

# (topic, question): written by hand for this benchmark, not taken from the topic texts.
PYDOC_QUESTIONS = [
    ("pass", "What does the pass statement do?"),
    ("pass", "How do I write a function body that does nothing yet?"),
    ("continue", "Where is continue allowed to appear in a loop?"),
    ("break", "What happens to the else clause of a loop when break runs?"),
    ("lambda", "How do I write an anonymous function with lambda?"),
    ("lambda", "Can a lambda expression contain statements?"),
    ("if", "How does Python choose which branch of an if/elif/else runs?"),
    ("while", "When does the else clause of a while loop execute?"),
    ("for", "Can I modify the list I am iterating over in a for loop?"),
    ("for", "What does the for statement assign to the target list on each iteration?"),
    ("yield", "What does a yield statement in a function body do?"),
    ("nonlocal", "How do I rebind a variable of an enclosing function with nonlocal?"),
    ("global", "How do I assign to a module-level variable from inside a function?"),
    ("del", "What does del do to a name or a subscription?"),
    ("return", "What does return do inside a generator function?"),
    ("assert", "Are assert statements removed when Python runs with -O?"),
    ("assert", "What is assert equivalent to when __debug__ is true?"),
    ("raise", "How do I chain exceptions with raise ... from?"),
    ("raise", "What does a bare raise re-raise?"),
    ("try", "When does the finally clause of a try statement run?"),
    ("try", "What is the except* clause for exception groups?"),
    ("with", "How does the with statement call __enter__ and __exit__?"),
    ("with", "Can one with statement use several context managers?"),
    (
        "context-managers",
        "What should a context manager's __exit__ method return to suppress an exception?",
    ),
    ("class", "How do class decorators get applied in a class definition?"),
    ("function", "When are default parameter values evaluated in a def?"),
    ("function", "What do the / and * markers mean in a function's parameter list?"),
    ("import", "How does from module import * decide which names to import?"),
    ("import", "What are future statements like from __future__ import annotations?"),
    ("async", "What is an async for loop and which methods does it need?"),
    ("await", "Where can an await expression be used?"),
    ("integers", "Can integer literals contain underscores, like 1_000_000?"),
    ("floating", "What is the syntax of floating point literals with exponents?"),
    ("imaginary", "How do I write an imaginary number literal like 3j?"),
    ("power", "What does 2 ** -1 return with the power operator?"),
    ("shifting", "What does the << shift operator do with a negative count?"),
    ("bitwise", "Which types support the & | and ^ binary bitwise operators?"),
    ("unary", "What does the ~ unary inversion operator compute for integers?"),
    ("booleans", "What do the and and or operators return, the operand or True/False?"),
    ("in", "How does the in membership test work for strings and dictionaries?"),
    ("truth", "Which values are considered false in truth value testing?"),
    ("slicings", "What does a slicing with a step like a[::2] do?"),
    ("subscriptions", "How does subscription of a dict or a list work, and __class_getitem__?"),
    ("dict", "What happens with duplicate keys in a dictionary display?"),
    ("dict", "How do dictionary comprehensions look?"),
    ("lists", "What is a list display, and how are list comprehensions written?"),
    ("augassign", "Is x += 1 evaluated differently from x = x + 1?"),
    (
        "exceptions",
        "How are exceptions raised and handled, and what does the exception handler see?",
    ),
    ("naming", "What are the scoping rules for names bound in a class block?"),
    ("naming", "How does name resolution work for free variables in nested functions?"),
    ("identifiers", "Which names are soft keywords, like match and case?"),
    ("id-classes", "What are names with leading and trailing double underscores reserved for?"),
    ("calls", "How are keyword arguments and *args unpacking matched in a call?"),
    ("operator-summary", "What is the operator precedence of not versus == in Python?"),
    ("numeric-types", "What are __radd__ and the reflected numeric methods for?"),
    (
        "sequence-types",
        "Which methods do I implement to emulate a container with __len__ and __getitem__?",
    ),
    ("typesseq-mutable", "What does s.insert(i, x) do on a mutable sequence?"),
    ("objects", "What are identity, type and value of a Python object?"),
    ("binary", "What does the @ matrix multiplication operator do?"),
    ("binary", "How does floor division // round negative numbers?"),
    ("conversions", "How are int and float operands converted for arithmetic?"),
    ("callable-types", "How do I make instances of my class callable with __call__?"),
    ("bltin-ellipsis-object", "What is the Ellipsis object and how is it written?"),
    ("bltin-null-object", "What is the None object?"),
    ("typesmodules", "What operations do module objects support, like __dict__?"),
    ("typesmethods", "What are bound method objects and their __self__ attribute?"),
    ("specialattrs", "What does the __qualname__ special attribute hold?"),
    ("atom-identifiers", "What is private name mangling of __spam inside a class?"),
    ("exprlists", "When does an expression list create a tuple?"),
    ("dynamic-features", "Why can't exec or eval see free variables of enclosing functions?"),
]


def apple_docs() -> list[str]:
    with open(apple_path(), encoding="utf-8") as f:
        return [json.loads(line)["docs"][0] for line in f]


def apple_questions() -> list[tuple[str, str]]:
    """(file name of the gold document, question) for the held-out documents."""
    out = []
    with open(apple_path(), encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n % 5 == 0:
                out += [(apple_name(n), q) for q in json.loads(line)["question"]]
    return out


def apple_train_questions() -> list[tuple[int, str]]:
    """(line, question) of the documents that are NOT held out (for tuning, never scoring)."""
    out = []
    with open(apple_path(), encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n % 5 != 0:
                out += [(n, q) for q in json.loads(line)["question"]]
    return out


def apple_name(line: int) -> str:
    return f"apple-{line:04d}.txt"


def pydoc_topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    out, seen = {}, set()
    for name in sorted(topics, key=lambda n: (n == "else", n)):  # keep "if", not its copy
        text = topics[name]
        if len(text) <= PYDOC_MAX_CHARS and text not in seen:  # "else" repeats "if"
            out[name] = text
            seen.add(text)
    return out


def write_set(which: str, folder: Path) -> list[tuple[str, str]]:
    """Write the documents of `which` under `folder`; returns (gold file name, question)."""
    folder.mkdir(parents=True, exist_ok=True)
    if which == "apple":
        files = {apple_name(n): text for n, text in enumerate(apple_docs())}
        questions = apple_questions()
    else:
        files = {f"{name}.txt": text for name, text in pydoc_topics().items()}
        questions = [(f"{t}.txt", q) for t, q in PYDOC_QUESTIONS]
        missing = {g for g, _ in questions} - set(files)
        if missing:
            raise SystemExit(f"pydoc questions name topics not in the set: {sorted(missing)}")
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return questions
