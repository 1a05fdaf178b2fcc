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

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

#: folders of installed packages: other projects' READMEs and licences, not the user's
DEPENDENCY_FOLDERS = frozenset({"node_modules", "site-packages", "__pycache__", "bower_components"})
IGNORE_FILE = ".gitignore"
log = logging.getLogger("clara.index")


#: a segment pattern's pieces: a character, "?" (any one), "*" (any run), or a class
_STAR, _ANY = object(), object()  # (not "*" and "?": an escaped "\\*" is a character)
#: POSIX character classes git's patterns may use inside [...]
_POSIX = {
    "alnum": str.isalnum, "alpha": str.isalpha, "digit": str.isdigit, "lower": str.islower,
    "upper": str.isupper, "space": str.isspace, "punct": lambda c: c.isprintable()
    and not c.isalnum() and not c.isspace(), "xdigit": lambda c: c in "0123456789abcdefABCDEF",
    "blank": lambda c: c in " \t", "print": str.isprintable, "graph": lambda c: c.isprintable()
    and not c.isspace(), "cntrl": lambda c: not c.isprintable(),
}  # fmt: skip
_DOUBLE = object()  # a "**" segment: any folders, or none


@dataclass(frozen=True)
class _Class:
    negated: bool
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    named: tuple[str, ...]

    def matches(self, c: str) -> bool:
        hit = (
            c in self.chars
            or any(lo <= c <= hi for lo, hi in self.ranges)
            or any(_POSIX[n](c) for n in self.named)
        )
        return hit != self.negated


@dataclass(frozen=True)
class _Rule:
    parts: tuple  # each folder level's pieces, or _DOUBLE
    negated: bool
    folders_only: bool

    def matches(self, rel: str) -> bool:
        """Whether the '/'-separated path `rel` (below the rule's folder) matches."""
        return _match_parts(self.parts, rel.split("/"))


def parse_ignore(text: str) -> list[_Rule]:
    """The rules of one `.gitignore`'s text (lines that are no pattern, or that cannot be
    read, such as an unclosed "[", are left out)."""
    rules = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"(?<!\\) +$", "", line)  # trailing spaces, unless escaped
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        folders_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        parts: list = [] if anchored else [_DOUBLE]  # (a name: at any depth)
        segments = line.lstrip("/").split("/")
        for i, segment in enumerate(segments):
            if segment == "**":
                if i == len(segments) - 1:  # "dir/**": everything inside, not dir itself
                    parts += [(_STAR,), _DOUBLE]
                elif not parts or parts[-1] is not _DOUBLE:
                    parts.append(_DOUBLE)
                continue
            pieces = _pieces(segment)
            if pieces is None:
                break
            parts.append(pieces)
        else:
            rules.append(_Rule(tuple(parts), negated, folders_only))
    return rules


def _pieces(pattern: str) -> tuple | None:
    """One folder level's pattern as pieces (None: it cannot be read)."""
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not out or out[-1] is not _STAR:  # ("**" within a name is one "*")
                out.append(_STAR)
            i += 1
        elif c == "?":
            out.append(_ANY)
            i += 1
        elif c == "[":
            found = _class(pattern, i)
            if found is None:
                return None
            out.append(found[0])
            i = found[1]
        elif c == "\\" and i + 1 < n:
            out.append(pattern[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return tuple(out)


def _class(pattern: str, start: int) -> tuple[_Class, int] | None:
    """The bracket expression at `start` and the index after it (None: never closed)."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    i += negated
    chars: set[str] = set()
    ranges, named = [], []
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            return _Class(negated, frozenset(chars), tuple(ranges), tuple(named)), i + 1
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end > 0 and pattern[i + 2 : end] in _POSIX:
                named.append(pattern[i + 2 : end])
                i = end + 2
                continue
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            ranges.append((c, pattern[i + 2]))  # (z-a matches nothing, as in git)
            i += 3
            continue
        chars.add(c)
        i += 1
    return None


def _match_name(pieces: tuple, name: str) -> bool:
    """One folder level: `pieces` against `name`, in linear time per star (no regex: a
    .gitignore's "*a*a*a*a*b" backtracked for seconds per name)."""
    p = s = 0
    star_p, star_s = -1, 0
    while s < len(name):
        if p < len(pieces) and pieces[p] is _STAR:
            star_p, star_s = p, s
            p += 1
        elif p < len(pieces) and _one(pieces[p], name[s]):
            p += 1
            s += 1
        elif star_p >= 0:
            p, star_s = star_p + 1, star_s + 1
            s = star_s
        else:
            return False
    while p < len(pieces) and pieces[p] is _STAR:
        p += 1
    return p == len(pieces)


def _one(piece: object, c: str) -> bool:
    if piece is _ANY:
        return True
    if isinstance(piece, _Class):
        return piece.matches(c)
    return piece == c


def _match_parts(parts: tuple, names: list[str]) -> bool:
    """Folder levels `parts` (with "**": any levels) against a path's `names`."""
    states = _closure(parts, {0})
    for name in names:
        step = set()
        for i in states:
            if i < len(parts):
                if parts[i] is _DOUBLE:
                    step.add(i)  # (it takes this level too)
                elif _match_name(parts[i], name):
                    step.add(i + 1)
        if not step:
            return False
        states = _closure(parts, step)
    return len(parts) in states


def _closure(parts: tuple, states: set[int]) -> set[int]:
    """`states`, and past each "**" they stand at (it may take no level)."""
    out, todo = set(states), list(states)
    while todo:
        i = todo.pop()
        if i < len(parts) and parts[i] is _DOUBLE and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return out


class Ignored:
    """Whether a walk of `root` (a folder, or a glob's folder) leaves a file or folder under
    it out, by the `.gitignore` files of the folders from `root` down to it and of those above
    `root` in its git work tree, or as a dependency folder."""

    def __init__(self, root: Path) -> None:
        self._root = os.path.normpath(root)
        self._real_root = os.path.realpath(root)
        self._read: dict[str, list[_Rule]] = {}  # a folder's own .gitignore
        self._folders: dict[str, bool] = {}  # whether a folder is left out
        self._chains: dict[str, list[tuple[str, list[_Rule]]]] = {}  # `_chain`'s
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

    def _chain(self, folder: str) -> list[tuple[str, list[_Rule]]]:
        """The (folder, rules) of `folder` and the walked folders above it, down from `root`,
        that have rules: worked out once per folder (a path 900 folders deep asked each of
        its folders again for each of its files)."""
        todo = []  # (iterative: a tree thousands of folders deep is no recursion)
        while folder not in self._chains:
            todo.append(folder)
            up = os.path.dirname(folder) or os.curdir
            if folder == self._root or up == folder:
                break
            folder = up
        for folder in reversed(todo):
            up = os.path.dirname(folder) or os.curdir
            inherited = [] if folder == self._root or up == folder else self._chains[up]
            own = self._rules(folder)
            self._chains[folder] = inherited + [(folder, own)] if own else inherited
        return self._chains[todo[0]] if todo else self._chains[folder]

    def __call__(self, path: str | os.PathLike[str], is_folder: bool) -> bool:
        """Whether `path` (under `root`) is left out: itself, or a folder holding it."""
        path = os.path.normpath(path)
        parent = os.path.dirname(path) or os.curdir  # (a relative glob's match: "a.md")
        if parent != self._root and not os.path.relpath(parent, self._root).startswith(".."):
            todo = []  # the folders holding it not asked about yet (a walk asked each; a
            folder = parent  # glob's match not), outermost last
            while folder not in self._folders and folder != self._root:
                todo.append(folder)
                folder = os.path.dirname(folder) or os.curdir
            left = self._folders.get(folder, False)
            for folder in reversed(todo):
                left = left or self._decides(folder, True)
                self._folders[folder] = left
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
        holder = os.path.dirname(path) or os.curdir
        for base, rules in self._chain(holder):  # from `root` down to the folder holding it
            ignored = _decide(rules, os.path.relpath(path, base), is_folder, ignored)
        return ignored


def _decide(rules: list[_Rule], rel: str, is_folder: bool, ignored: bool) -> bool:
    rel = rel.replace(os.sep, "/")
    for rule in rules:
        if (is_folder or not rule.folders_only) and rule.matches(rel):
            ignored = not rule.negated
    return ignored


#: the largest .gitignore read, and the most rules taken from one (a hostile repository's
#: .gitignore could be /dev/zero, a pipe, or a million rules each file is matched against)
MAX_IGNORE_BYTES = 1 << 20
MAX_RULES = 10_000


def _rules_in(path: str) -> list[_Rule]:
    """The rules of the ignore file at `path`: a regular file only, not through a link (as
    git reads it), at most MAX_IGNORE_BYTES of it and MAX_RULES rules; any other is none, and
    said once."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except FileNotFoundError:
        return []
    except OSError as exc:  # a link (ELOOP under O_NOFOLLOW), a folder may not be read
        if os.path.islink(path):
            log.warning("%s is a link: not read (as git does not)", path)
        elif exc.errno not in (errno.ENOTDIR, errno.EACCES):
            log.warning("%s could not be read (%s): its rules are not applied", path, exc)
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.warning("%s is not a regular file: not read", path)
            return []
        data = f.read(MAX_IGNORE_BYTES + 1)
    if len(data) > MAX_IGNORE_BYTES:
        log.warning("%s is over %d bytes: only its start is read", path, MAX_IGNORE_BYTES)
        data = data[:MAX_IGNORE_BYTES].rsplit(b"\n", 1)[0]
    rules = parse_ignore(data.decode("utf-8", "surrogateescape"))  # (as os.walk's names are:
    if len(rules) > MAX_RULES:  # a Latin-1 name in it matches the file)
        log.warning("%s has %d rules: only its first %d apply", path, len(rules), MAX_RULES)
        rules = rules[:MAX_RULES]
    return rules


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
