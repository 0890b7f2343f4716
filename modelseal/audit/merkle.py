"""RFC 9162 §2.1 Merkle trees: hashes, tree heads, inclusion and consistency proofs.

Hashing (SHA-256, RFC 9162 §2.1.1)::

    MTH({})       = SHA-256()
    leaf hash     = SHA-256(0x00 || entry bytes)
    node hash     = SHA-256(0x01 || left || right)
    MTH(D[n])     = node(MTH(D[0:k]), MTH(D[k:n])),  k the largest power of two < n

Proof generation follows the PATH and SUBPROOF definitions of §2.1.3.1 and §2.1.4.1;
verification follows the algorithms of §2.1.3.2 and §2.1.4.2 step by step. Leaves are
given as their leaf hashes. :class:`CompactRange` keeps the right edge of a growing tree
(one hash per set bit of its size), so appending and computing the root cost O(log n)
without rereading old leaves.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

from modelseal.audit.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over ``leaves`` (leaf hashes), in O(n) hashes."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


def _mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    return root_hash(leaves)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 §2.1.3.1.

    Raises:
        ValueError: ``index`` is not in ``0..len(leaves)-1``.
    """
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index must be 0..{len(leaves) - 1}, got {index}")
    proof: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            proof.append(_mth(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(_mth(leaves[lo : lo + k]))
            lo, m = lo + k, m - k
    proof.reverse()
    return proof


def consistency_proof(leaves: Sequence[bytes], first_size: int) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1 (empty when m == n).

    Raises:
        ValueError: ``first_size`` is not in ``1..len(leaves)``.
    """
    n = len(leaves)
    if not 1 <= first_size <= n:
        raise ValueError(f"first tree size must be 1..{n}, got {first_size}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, n, first_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(_mth(leaves[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(_mth(leaves[lo:hi]))
    proof.reverse()
    return proof


def _check_hashes(hashes: Iterable[bytes], what: str) -> None:
    for item in hashes:
        if len(item) != HASH_SIZE:
            raise ProofError(f"{what}: every hash must be {HASH_SIZE} bytes")


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2).

    Raises:
        ProofError: The proof does not show ``leaf`` at ``index`` in the tree ``root``.
    """
    _check_hashes([leaf, root, *proof], "inclusion proof")
    if not 0 <= index < tree_size:
        raise ProofError("inclusion proof: leaf index is not below the tree size")
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof: too many hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof: too few hashes")
    if not hmac.compare_digest(r, root):
        raise ProofError("inclusion proof: root mismatch")


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Verify a consistency proof (RFC 9162 §2.1.4.2); ``m == n`` needs an empty proof.

    Raises:
        ProofError: The proof does not show that tree ``first_root`` is a prefix of
            tree ``second_root``.
    """
    _check_hashes([first_root, second_root, *proof], "consistency proof")
    if not 1 <= first_size <= second_size:
        raise ProofError("consistency proof: need 1 <= first size <= second size")
    if first_size == second_size:
        if proof:
            raise ProofError("consistency proof: must be empty for equal sizes")
        if not hmac.compare_digest(first_root, second_root):
            raise ProofError("consistency proof: roots of equal sizes differ")
        return
    if not proof:
        raise ProofError("consistency proof: empty")
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof: too many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof: too few hashes")
    if not (hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root)):
        raise ProofError("consistency proof: root mismatch")


class CompactRange:
    """The right edge of a tree: the roots of its perfect subtrees, largest first.

    ``hashes[i]`` is the root of a perfect subtree whose size is the i-th set bit of
    ``size``, counting from the most significant.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Resume from a stored ``size`` and right edge.

        Raises:
            ValueError: ``hashes`` does not have one 32-byte hash per set bit of ``size``.
        """
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError("compact range: one hash per set bit of the size")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError(f"compact range: hashes must be {HASH_SIZE} bytes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The right edge, largest subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        node = leaf
        size = self._size
        while size & 1:
            node = node_hash(self._hashes.pop(), node)
            size >>= 1
        self._hashes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far."""
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = node_hash(left, node)
        return node
