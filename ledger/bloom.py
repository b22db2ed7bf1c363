"""A Bloom filter over Python's own hashes: "surely not seen" for almost all that was not.

Where a long pass must tell whether something it meets was written earlier in the same
pass, without holding everything it wrote in memory: the importer's event ids (into an
empty ledger), and the replay writer's keys once it has forgotten the closed ones. A
"maybe" is then looked up in the store; a "no" never needs to be.

One bit array, three positions taken from one 64-bit ``hash``. ``str`` hashes are salted
per process, so a filter is only meaningful inside the process that filled it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class Bloom:
    """A set that may answer "maybe" for a value never added, but never "no" for one added.

    ``nbytes``: a power of two, at most 8 MiB. Three bits a value: with ``n`` values in
    ``8 * nbytes`` bits, the false "maybe" rate is about ``(1 - exp(-3n / bits)) ** 3``.
    """

    __slots__ = ("bits", "mask")

    def __init__(self, nbytes: int):
        # (positions are 26-bit fields of the hash: at most 2^26 bits)
        if nbytes < 1 or nbytes & (nbytes - 1) or nbytes > 1 << 23:
            raise ValueError(f"a Bloom filter's size must be a power of two up to 8 MiB,"
                             f" not {nbytes}")
        self.bits = bytearray(nbytes)
        self.mask = (nbytes << 3) - 1

    def __contains__(self, value: Hashable) -> bool:
        bits, mask = self.bits, self.mask
        h = hash(value)
        a, b, c = h & mask, (h >> 26) & mask, (h >> 38) & mask
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7))
                    and bits[c >> 3] & (1 << (c & 7)))

    def add(self, values: Iterable[Hashable]) -> None:
        """Add every one of ``values``."""
        self.seen_then_add(values)

    def seen_then_add(self, values: Iterable[Hashable]) -> list:
        """The ``values`` that may have been added before (all others surely not); then add
        them all. One call per batch: this is a hot loop (an import's every id)."""
        bits, mask = self.bits, self.mask
        maybe = []
        for v in values:
            # (str and tuple hashes are cached or cheap; the positions are its bit fields)
            h = hash(v)
            a, b, c = h & mask, (h >> 26) & mask, (h >> 38) & mask
            ia, ib, ic = a >> 3, b >> 3, c >> 3
            ba, bb, bc = 1 << (a & 7), 1 << (b & 7), 1 << (c & 7)
            if bits[ia] & ba and bits[ib] & bb and bits[ic] & bc:
                maybe.append(v)
            else:
                bits[ia] |= ba
                bits[ib] |= bb
                bits[ic] |= bc
        return maybe
