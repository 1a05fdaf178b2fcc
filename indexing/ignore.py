"""What a folder walk leaves out besides hidden files: what `.gitignore` files name (a docs
repository's build output, drafts, private notes), and dependency folders (`node_modules`,
`site-packages`, `__pycache__`), which hold other projects' documentation.

A `.gitignore` applies to the folder it is in and everything below, as git reads it: one
pattern per line, `#` comments, `!` to take back what an earlier line left out, a trailing `/`
for folders only, a pattern with a `/` before its end anchored to the `.gitignore`'s folder
(else matched at any depth), `*`, `?`, `[...]` within a name and `**` across folders; the last
matching line decides, and nothing inside a folder left out comes back. When the folder walked
is inside a git work tree, the `.gitignore` files of the folders above it up to the tree's top
and its `.git/info/exclude` apply too. (Git's global excludes file does not.)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: folders of installed packages: other projects' READMEs and licences, not the user's
DEPENDENCY_FOLDERS = frozenset({"node_modules", "site-packages", "__pycache__", "bower_components"})
IGNORE_FILE = ".gitignore"


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negated: bool
    folders_only: bool


def parse_ignore(text: str) -> list[_Rule]:
    """The rules of one `.gitignore`'s text (lines that are no pattern are left out)."""
    rules = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"(?<!\\)\s+$", "", line)  # trailing spaces, unless escaped
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        folders_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        body = _translate(line.lstrip("/"))
        if body is None:
            continue
        rules.append(
            _Rule(
                re.compile(("" if anchored else "(?:.*/)?") + body + r"\Z"), negated, folders_only
            )
        )
    return rules


def _translate(pattern: str) -> str | None:
    """A gitignore pattern as a regular expression over '/'-separated paths (None: a pattern
    that cannot be read, such as an unclosed '[')."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        at_start = i == 0 or pattern[i - 1] == "/"
        if pattern.startswith("**/", i) and at_start:
            out.append("(?:.*/)?")  # any folders, or none
            i += 3
        elif pattern.startswith("**", i) and at_start and i + 2 == n:
            out.append(".*")  # everything inside
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                return None
            inner = pattern[i + 1 : end]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\") + "]")
            i = end + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class Ignored:
    """Whether a walk of `root` (a folder, or a glob's folder) leaves a file or folder under
    it out, by the `.gitignore` files of the folders from `root` down to it and of those above
    `root` in its git work tree, or as a dependency folder."""

    def __init__(self, root: Path) -> None:
        self._root = os.path.normpath(root)
        self._real_root = os.path.realpath(root)
        self._read: dict[str, list[_Rule]] = {}  # a folder's own .gitignore
        self._folders: dict[str, bool] = {}  # whether a folder is left out
        self._above: list[tuple[str, list[_Rule]]] = []
        top = _work_tree_top(self._real_root)
        if top is not None:
            self._above.append((top, _rules_in(os.path.join(top, ".git", "info", "exclude"))))
            folder = top
            for part in Path(os.path.relpath(self._real_root, top)).parts[:-1]:
                self._above.append((folder, self._rules(folder)))
                folder = os.path.join(folder, part)
            if folder != self._real_root:
                self._above.append((folder, self._rules(folder)))

    def _rules(self, folder: str) -> list[_Rule]:
        if folder not in self._read:
            self._read[folder] = _rules_in(os.path.join(folder, IGNORE_FILE))
        return self._read[folder]

    def __call__(self, path: str | os.PathLike[str], is_folder: bool) -> bool:
        """Whether `path` (under `root`) is left out: itself, or a folder holding it."""
        path = os.path.normpath(path)
        parent = os.path.dirname(path) or os.curdir  # (a relative glob's match: "a.md")
        if parent != self._root and not os.path.relpath(parent, self._root).startswith(".."):
            if parent not in self._folders:  # (a walk asked already; a glob's match not)
                self._folders[parent] = self(parent, True)
            if self._folders[parent]:
                return True
        return self._decides(path, is_folder)

    def _decides(self, path: str, is_folder: bool) -> bool:
        if is_folder and os.path.basename(path) in DEPENDENCY_FOLDERS:
            return True
        ignored = False
        real = os.path.join(self._real_root, os.path.relpath(path, self._root))
        for base, rules in self._above:  # (matched against real paths: links resolved above)
            ignored = _decide(rules, os.path.relpath(real, base), is_folder, ignored)
        folder, chain = self._root, []
        for part in Path(os.path.relpath(path, self._root)).parts[:-1]:
            chain.append(folder)
            folder = os.path.join(folder, part)
        chain.append(folder)
        for base in chain:  # from `root` down to the folder holding `path`
            ignored = _decide(self._rules(base), os.path.relpath(path, base), is_folder, ignored)
        return ignored


def _decide(rules: list[_Rule], rel: str, is_folder: bool, ignored: bool) -> bool:
    rel = rel.replace(os.sep, "/")
    for rule in rules:
        if (is_folder or not rule.folders_only) and rule.regex.match(rel):
            ignored = not rule.negated
    return ignored


def _rules_in(path: str) -> list[_Rule]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_ignore(f.read())
    except OSError:
        return []


def _work_tree_top(root: Path) -> str | None:
    """The top of the git work tree `root` is in (the folder holding `.git`), or None."""
    folder = os.path.realpath(root)
    while True:
        if os.path.exists(os.path.join(folder, ".git")):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
