"""A keyed, streamed permutation of 0..n-1: the order in which probes go out.

A 3-round Feistel network over the smallest even-bit power of two >= n, with cycle walking
(indices >= n are fed through again), is a bijection on 0..n-1 that needs O(1) memory, so a
/16 x 100 ports scan is never materialised. Up to `SMALL` elements (a few megabytes) a
keyed Fisher-Yates shuffle in C is used instead: same contract, several times faster per
element. The same key gives the same order (`--seed`).
"""

from __future__ import annotations

import random

try:  # hashlib would load OpenSSL's _hashlib too (~5 ms of a scan's start-up) for this one digest
    from _blake2 import blake2b
except ImportError:  # pragma: no cover (CPython always builds _blake2)
    from hashlib import blake2b
from collections.abc import Iterator

SMALL = 1 << 18

_ROUNDS = 3  # Luby-Rackoff: three rounds of a keyed function give a pseudorandom permutation


class Permutation:
    def __init__(self, n: int, key: int) -> None:
        if n < 0:
            raise ValueError("permutation size must be >= 0")
        self.n = n
        bits = max(2, (max(n, 1) - 1).bit_length())
        bits += bits & 1
        self.half = bits // 2
        self.mask = (1 << self.half) - 1
        # Signed: a negative key (--seed -7) has its own bytes; a non-negative one the same as unsigned.
        digest = blake2b(key.to_bytes(16, "little", signed=True), digest_size=8 * _ROUNDS).digest()
        self.keys = [int.from_bytes(digest[8 * i : 8 * i + 8], "little") for i in range(_ROUNDS)]
        self._seed = int.from_bytes(digest, "little")
        self._is_small = n <= SMALL
        self._small: list[int] | None = None  # the shuffled order, made on first use

    def _order(self) -> list[int]:
        if self._small is None:
            self._small = list(range(self.n))
            random.Random(self._seed).shuffle(self._small)
        return self._small

    def _feistel(self, x: int) -> int:
        half, mask = self.half, self.mask
        left, right = x >> half, x & mask
        for k in self.keys:
            mixed = ((right * 0x9E3779B97F4A7C15) ^ k) & 0xFFFFFFFFFFFFFFFF
            mixed ^= mixed >> 29
            left, right = right, (left ^ mixed) & mask
        return (left << half) | right

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        if self._is_small:
            return self._order()[index]
        x = self._feistel(index)
        while x >= self.n:
            x = self._feistel(x)
        return x

    def __iter__(self) -> Iterator[int]:
        if self._is_small:
            yield from self._order()
            return
        n, feistel = self.n, self._feistel
        for index in range(n):
            x = feistel(index)
            while x >= n:
                x = feistel(x)
            yield x

    def share(self, index: int, count: int) -> Iterator[int]:
        """One worker's part of the order; the `count` parts are disjoint and cover 0..n-1.

        Large permutations give every `count`-th element from position `index`. Small ones
        give the elements congruent to `index` mod `count` in a keyed order of their own, so
        forked workers each shuffle n/count elements, at the same time, instead of the parent
        shuffling all n before the fork.
        """
        if self._is_small:
            if count == 1:
                return iter(self._order())
            mine = list(range(index, self.n, count))
            random.Random(self._seed << 16 | index << 8 | count).shuffle(mine)
            return iter(mine)
        return self._share(index, count)

    def _share(self, index: int, count: int) -> Iterator[int]:
        n, feistel = self.n, self._feistel
        for position in range(index, n, count):
            x = feistel(position)
            while x >= n:
                x = feistel(x)
            yield x

    def __len__(self) -> int:
        return self.n
