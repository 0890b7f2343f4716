"""RFC 9162 Merkle trees: reference vectors, every proof up to 64 leaves, corruption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from modelseal.audit.errors import ProofError
from modelseal.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "audit" / "rfc6962_merkle_vectors.json").read_text()
)
MAX_SIZE = 64
LEAVES = [leaf_hash(b"leaf %d" % i) for i in range(MAX_SIZE)]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def reference_mth(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC 9162 §2.1.1 definition (recursive)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_mth(leaves[:k]), reference_mth(leaves[k:]))


def test_leaf_and_root_hashes_match_the_reference_vectors() -> None:
    leaves = [leaf_hash(h(x)) for x in VECTORS["leaf_inputs_hex"]]
    assert [x.hex() for x in leaves] == VECTORS["leaf_hashes_hex"]
    for size, expected in enumerate(VECTORS["roots_hex"]):
        assert root_hash(leaves[:size]).hex() == expected
    assert EMPTY_ROOT.hex() == VECTORS["roots_hex"][0]


def test_compact_ranges_match_the_reference_vectors() -> None:
    leaves = [leaf_hash(h(x)) for x in VECTORS["leaf_inputs_hex"]]
    compact = CompactRange()
    for size, expected in enumerate(VECTORS["compact_ranges_hex"]):
        assert [x.hex() for x in compact.hashes] == expected
        resumed = CompactRange(size, [h(x) for x in expected])
        assert resumed.root() == compact.root()
        if size < len(leaves):
            compact.append(leaves[size])


def test_reference_inclusion_proofs_are_generated_and_verify() -> None:
    leaves = [leaf_hash(h(x)) for x in VECTORS["leaf_inputs_hex"]]
    for case in VECTORS["inclusion_proofs"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = [h(x) for x in case["proof_hex"]]
        assert inclusion_proof(leaves[:size], index) == proof
        verify_inclusion(leaves[index], index, size, proof, h(VECTORS["roots_hex"][size]))


def test_reference_consistency_proofs_are_generated_and_verify() -> None:
    leaves = [leaf_hash(h(x)) for x in VECTORS["leaf_inputs_hex"]]
    roots = [h(x) for x in VECTORS["roots_hex"]]
    for case in VECTORS["consistency_proofs"]:
        m, n = case["first_size"], case["second_size"]
        proof = [h(x) for x in case["proof_hex"]]
        assert consistency_proof(leaves[:n], m) == proof
        verify_consistency(m, n, roots[m], roots[n], proof)


def test_roots_match_the_recursive_definition_for_every_size_up_to_64() -> None:
    compact = CompactRange()
    for size in range(MAX_SIZE + 1):
        assert root_hash(LEAVES[:size]) == reference_mth(LEAVES[:size])
        assert compact.root() == reference_mth(LEAVES[:size])
        if size < MAX_SIZE:
            compact.append(LEAVES[size])


def _flip_each_hash(proof: list[bytes]) -> list[list[bytes]]:
    variants = []
    for i in range(len(proof)):
        for bit in (0, 7, 255):  # first byte low bit, high bit, last byte
            damaged = bytearray(proof[i])
            position = 0 if bit < 8 else len(damaged) - 1
            damaged[position] ^= 1 << (bit % 8)
            variants.append([*proof[:i], bytes(damaged), *proof[i + 1 :]])
    return variants


def test_every_inclusion_proof_up_to_64_verifies_and_any_corrupted_hash_fails() -> None:
    checked = corrupted = 0
    for size in range(1, MAX_SIZE + 1):
        root = root_hash(LEAVES[:size])
        for index in range(size):
            proof = inclusion_proof(LEAVES[:size], index)
            verify_inclusion(LEAVES[index], index, size, proof, root)
            checked += 1
            for damaged in _flip_each_hash(proof):
                with pytest.raises(ProofError):
                    verify_inclusion(LEAVES[index], index, size, damaged, root)
                corrupted += 1
            # The wrong leaf, index, size, and a proof one hash short or long.
            with pytest.raises(ProofError):
                verify_inclusion(LEAVES[(index + 1) % MAX_SIZE], index, size, proof, root)
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(LEAVES[index], (index + 1) % size, size, proof, root)
                with pytest.raises(ProofError):
                    verify_inclusion(LEAVES[index], index, size, proof[:-1], root)
            with pytest.raises(ProofError):
                verify_inclusion(LEAVES[index], index, size, [*proof, root], root)
            if size < MAX_SIZE:  # the signed root of a bigger tree does not take this proof
                bigger = root_hash(LEAVES[: size + 1])
                with pytest.raises(ProofError):
                    verify_inclusion(LEAVES[index], index, size + 1, proof, bigger)
    assert checked == MAX_SIZE * (MAX_SIZE + 1) // 2
    assert corrupted > 0


def test_every_consistency_proof_up_to_64_verifies_and_any_corrupted_hash_fails() -> None:
    roots = [root_hash(LEAVES[:n]) for n in range(MAX_SIZE + 1)]
    checked = 0
    for n in range(1, MAX_SIZE + 1):
        for m in range(1, n + 1):
            proof = consistency_proof(LEAVES[:n], m)
            verify_consistency(m, n, roots[m], roots[n], proof)
            checked += 1
            for damaged in _flip_each_hash(proof):
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m], roots[n], damaged)
            if m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m], roots[n - 1], proof)
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m - 1] if m > 1 else roots[n], roots[n], proof)
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m], roots[n], [*proof, roots[n]])
            else:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, roots[m], roots[n], [roots[n]])
    assert checked == MAX_SIZE * (MAX_SIZE + 1) // 2


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 3), (-1, 4)])
def test_inclusion_refuses_an_index_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], index, size, [], LEAVES[0])


def test_proofs_refuse_hashes_of_the_wrong_length() -> None:
    with pytest.raises(ProofError):
        verify_inclusion(b"short", 0, 1, [], LEAVES[0])
    with pytest.raises(ProofError):
        verify_consistency(1, 2, LEAVES[0], root_hash(LEAVES[:2]), [LEAVES[1][:31]])
    with pytest.raises(ProofError):
        verify_consistency(2, 1, LEAVES[0], LEAVES[0], [])


def test_consistency_edge_sizes() -> None:
    # m == n: only an empty proof between equal roots; m = 0 (the empty tree) is
    # outside RFC 9162's PROOF(m, D[n]) and refused rather than trivially accepted.
    root = root_hash(LEAVES[:5])
    verify_consistency(5, 5, root, root, [])
    with pytest.raises(ProofError):
        verify_consistency(5, 5, root, root_hash(LEAVES[:4]), [])
    with pytest.raises(ProofError):
        verify_consistency(0, 5, EMPTY_ROOT, root, [])
    with pytest.raises(ValueError, match="first tree size"):
        consistency_proof(LEAVES[:5], 0)
    with pytest.raises(ValueError, match="first tree size"):
        consistency_proof(LEAVES[:5], 6)
    with pytest.raises(ProofError):
        verify_consistency(3, 5, root_hash(LEAVES[:3]), root, [])  # empty proof, m < n
