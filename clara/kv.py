"""KV caches across requests: a prompt prefix's cache kept for the next prompt that starts
the same way (`PrefixCache`), and per-request prefill caches joined into one batch cache
(`join_caches`), for the token loop (`clara.decode`)."""

from __future__ import annotations

from collections import OrderedDict

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache

from clara.prompt import Prompt

MIN_PREFIX = 8  # shorter shared prefixes are not worth a cache entry
#: Rows of a prefill chunk at most (a prefix entry holds at most one chunk); longer prompts
#: prefill in chunks, in passes never split across lanes (`Decoder._prefill_parts`)
PREFILL_STEP = 512


class PrefixCache:
    """KV states of prompt prefixes requests share: the system prompt and chat template that
    every request starts with, and the text that follows them when it repeats (a "mixed"
    prompt's best chunk, a text prompt's first chunks).

    An entry holds the KV of a prompt's leading text tokens (at most `max_positions`); a new
    prompt reuses the longest common prefix with any entry, and once prefilled its own leading
    text becomes an entry too, replacing entries that are prefixes of it. Least recently used
    entries go first, past `entries` of them or `max_bytes` in all.

    Not mlx-lm's `LRUPromptCache`: it hands back a deep copy of a whole cache and reuses a
    longer entry only by trimming it; here an entry is shared read-only by a batch of
    prompts that each take a slice of it, with no copy of its arrays.
    """

    def __init__(
        self, entries: int = 32, max_bytes: int = 256 << 20, max_positions: int = PREFILL_STEP
    ) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self.max_positions = max_positions
        self._items: OrderedDict[tuple[int, ...], list[tuple[mx.array, mx.array]]] = OrderedDict()
        self.hits = 0
        self.reused_positions = 0

    @staticmethod
    def _common(a: tuple[int, ...], b: list[int]) -> int:
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        return i

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for kv in self._items.values() for k, v in kv)

    def held(self, plain: list[int]) -> int:
        """Positions of `plain` the cache holds now (0 below MIN_PREFIX); nothing moves."""
        best = max((self._common(k, plain) for k in self._items), default=0)
        return best if best >= MIN_PREFIX else 0

    def lookup(self, plain: list[int]) -> tuple[int, list[KVCache] | None]:
        """(positions reused, caches holding them) for a prompt whose text tokens are `plain`."""
        best, key = 0, None
        for k in self._items:
            n = self._common(k, plain)
            if n > best:
                best, key = n, k
        if key is None or best < MIN_PREFIX:
            return 0, None
        self._items.move_to_end(key)
        caches = []
        for k, v in self._items[key]:
            c = KVCache()
            c.keys, c.values, c.offset = k[..., :best, :], v[..., :best, :], best
            caches.append(c)
        return best, caches

    def count(self, positions: int, rows: int) -> None:
        """Tally a prefill pass that took `positions` from the cache for each of `rows`."""
        if positions:
            self.hits += 1
            self.reused_positions += positions * rows

    def store(self, plain: list[int], caches: list[KVCache]) -> None:
        """Remember the KV of `plain` (leading text tokens just prefilled into `caches`), up
        to `max_positions` of them."""
        plain = plain[: self.max_positions]
        n = len(plain)
        if n < MIN_PREFIX:
            return
        for k in self._items:
            if self._common(k, plain) == n:  # an entry holds it already
                self._items.move_to_end(k)
                return
        for k in [k for k in self._items if self._common(k, plain) == len(k)]:
            del self._items[k]  # a prefix of this one: it answers every lookup that one would
        kv = [
            (mx.contiguous(c.keys[..., :n, :]), mx.contiguous(c.values[..., :n, :])) for c in caches
        ]
        mx.async_eval(kv)  # copied on the stream while the first tokens go out
        self._items[tuple(plain)] = kv
        while len(self._items) > self.entries or (
            len(self._items) > 1 and self.nbytes > self.max_bytes
        ):
            self._items.popitem(last=False)


def text_prefix(prompt: Prompt) -> list[int]:
    """The leading positions of `prompt` that are plain tokens (before any memory slot; all but
    the last position of a text prompt, which must be fed to get the first logits); none for
    a prompt of input embeddings that does not say where its text ends (`Prompt.text_len`)."""
    if prompt.embeddings is None:
        return prompt.tokens[:-1]
    return prompt.tokens[: min(prompt.text_len or 0, len(prompt.tokens) - 1)]


def shared_text(prompts: list[Prompt], at_least: int = MIN_PREFIX) -> int:
    """The leading text positions (`text_prefix`) all `prompts` share: what a pass prefilling
    them together can take from the prefix cache (0 when fewer than `at_least`)."""
    plains = [text_prefix(p) for p in prompts]
    n = min(PrefixCache._common(tuple(plains[0]), pl) for pl in plains)
    return n if n >= at_least else 0


def join_caches(caches: list[BatchKVCache]) -> BatchKVCache:
    """One batch cache holding the rows of `caches` in order, every row's positions moved to
    end at the same index (its left padding grows; a right-padded prefill's padding becomes
    left padding), with room for the next position.

    Each row is copied once, however many caches join: mlx-lm's pairwise `extend` chained
    over four prefill passes (plus the per-row roll of each right-padded one) copied the
    first rows four times, ~180 ms for 8 prompts' 30 layers here."""
    idx = max(c._idx for c in caches)
    cap = (idx // BatchKVCache.step + 1) * BatchKVCache.step
    pieces: list[tuple[BatchKVCache, int, int, int, int]] = []  # cache, first row, lo, hi, start
    lefts, offsets = [], []
    for c in caches:
        right = c._right_padding
        if right is None:  # aligned already: the rows move as one block
            pieces.append((c, -1, 0, c._idx, idx - c._idx))
            lefts.append(c.left_padding + (idx - c._idx))
            offsets.append(c.offset)
            continue
        starts = []
        for i, (lo, r) in enumerate(zip(c.left_padding.tolist(), right.tolist())):
            hi = c._idx - r
            pieces.append((c, i, lo, hi, idx - hi + lo))
            starts.append(idx - hi + lo)
        lefts.append(mx.array(starts))
        offsets.append(c.offset - right)
    rows = sum(c.offset.shape[0] for c in caches)
    out = BatchKVCache([])
    for name in ("keys", "values"):
        first = getattr(caches[0], name)
        _, H, _, D = first.shape
        buf = mx.zeros((rows, H, cap, D), first.dtype)
        row = 0
        for c, i, lo, hi, start in pieces:
            src = getattr(c, name)
            part = src[:, :, lo:hi] if i < 0 else src[i : i + 1, :, lo:hi]
            buf[row : row + part.shape[0], :, start : start + hi - lo] = part
            row += part.shape[0]
        setattr(out, name, buf)
    out.left_padding = mx.concatenate(lefts)
    out.offset = mx.concatenate(offsets)
    out._idx = idx
    return out
