"""A 1,000-entry signed log: every kind of tampering is detected and the first bad entry named.

The default run sweeps a documented subset (every 50th entry, plus the entries at
both ends and around checkpoint boundaries) with all tamper kinds; the ``slow`` run
sweeps every entry, every member of every entry, every adjacent pair and every
insertion position. Checkpoints are signed every 100 entries and at 1,000.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal.audit.checkpoint import Checkpoint, sign_checkpoint
from modelseal.audit.errors import (
    LOG_CHAIN_BROKEN,
    LOG_CHECKPOINT_INCONSISTENT,
    LOG_CHECKPOINT_SIGNATURE,
    LOG_ENTRY_MALFORMED,
    LOG_ROOT_MISMATCH,
    LOG_SEQUENCE_GAP,
    LOG_TRUNCATED,
    LogVerificationError,
    ProofError,
)
from modelseal.audit.merkle import consistency_proof, leaf_hash, root_hash, verify_consistency
from modelseal.audit.note import Ed25519NoteSigner, parse_verifier_key
from modelseal.audit.verify import (
    StoredEntry,
    build_consistency_bundle,
    load_checkpoints,
    verify_consistency_bundle,
    verify_entry,
    verify_log,
)

from .logutil import FIELDS, ORIGIN, SignedLog, build_log, chain, make_entry, modified, rows_of

SIZE = 1000
LOG = build_log(SIZE, every=100)
BOUNDARIES = {0, 1, 2, 98, 99, 100, 101, 499, 500, 501, 997, 998, 999}
SAMPLE = sorted(BOUNDARIES | set(range(0, SIZE, 50)))
EVERY = list(range(SIZE))


def failure(log: SignedLog, rows: list[StoredEntry], **kwargs: int) -> LogVerificationError:
    with pytest.raises(LogVerificationError) as info:
        verify_log(rows, log.checkpoints, **kwargs)
    return info.value


def test_the_untouched_log_verifies() -> None:
    report = verify_log(LOG.rows, LOG.checkpoints, expected_size=SIZE)
    assert report.size == SIZE
    assert report.covered == SIZE
    assert len(report.checkpoints) == 10


def _modify_sweep(positions: list[int]) -> int:
    detected = 0
    for i in positions:
        for field in FIELDS:
            rows = list(LOG.rows)
            rows[i] = modified(LOG.entries[i], field)
            error = failure(LOG, rows)
            detected += 1
            if field == "v":
                assert error.code == LOG_ENTRY_MALFORMED
            elif field == "seq":
                assert error.code == LOG_SEQUENCE_GAP
            elif i == SIZE - 1 and field != "prev":
                assert error.code == LOG_ROOT_MISMATCH  # nothing links to the last entry
            else:
                assert error.code == LOG_CHAIN_BROKEN
            if i == SIZE - 1 and field == "prev":
                # The last link broken: the last entry's prev, or the one before it.
                assert error.seq in (i - 1, i), (i, field, error)
            else:
                assert error.seq == i, (i, field, error)
    return detected


def _delete_sweep(positions: list[int]) -> None:
    for i in positions:
        rows = LOG.rows[:i] + LOG.rows[i + 1 :]
        error = failure(LOG, rows)
        if i == SIZE - 1:
            assert (error.code, error.seq) == (LOG_TRUNCATED, i)
        else:
            assert (error.code, error.seq) == (LOG_SEQUENCE_GAP, i), (i, error)


def _swap_sweep(positions: list[int]) -> None:
    for i in positions:
        if i + 1 >= SIZE:
            continue
        rows = list(LOG.rows)
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
        error = failure(LOG, rows)
        assert (error.code, error.seq) == (LOG_SEQUENCE_GAP, i), (i, error)


def _insert_sweep(positions: list[int]) -> None:
    for p in [*positions, SIZE]:
        # The forger numbers the entry p and chains it to entry p - 1, as well as can be.
        prev = LOG.entries[p - 1].leaf_hash().hex() if p else "0" * 64
        forged = replace(make_entry(p, prev), actor="admin:mallory", details={"forged": True})
        rows = [*LOG.rows[:p], StoredEntry(p, forged.to_bytes()), *LOG.rows[p:]]
        error = failure(LOG, rows, expected_size=SIZE)
        assert (error.code, error.seq) == (LOG_SEQUENCE_GAP, p), (p, error)


def test_sampled_modification_of_every_member_is_detected_and_named() -> None:
    assert _modify_sweep(SAMPLE) == len(SAMPLE) * len(FIELDS)


def test_sampled_deletions_are_detected_and_named() -> None:
    _delete_sweep(SAMPLE)


def test_sampled_adjacent_swaps_are_detected_and_named() -> None:
    _swap_sweep(SAMPLE)


def test_sampled_insertions_are_detected_and_named() -> None:
    _insert_sweep(SAMPLE)


@pytest.mark.slow
def test_every_member_of_every_entry_modified_is_detected() -> None:
    assert _modify_sweep(EVERY) == SIZE * len(FIELDS)


@pytest.mark.slow
def test_every_deletion_swap_and_insertion_is_detected() -> None:
    _delete_sweep(EVERY)
    _swap_sweep(EVERY)
    _insert_sweep(EVERY)


def _truncate_sweep(sizes: list[int]) -> None:
    for keep in sizes:
        error = failure(LOG, LOG.rows[:keep])
        assert (error.code, error.seq) == (LOG_TRUNCATED, keep)


def test_sampled_truncations_after_a_published_checkpoint_are_detected() -> None:
    _truncate_sweep(SAMPLE)


@pytest.mark.slow
def test_every_truncation_after_a_published_checkpoint_is_detected() -> None:
    _truncate_sweep(EVERY)


def test_an_insider_who_rewrites_and_rechains_is_caught_by_the_checkpoints() -> None:
    for i in sorted(BOUNDARIES):
        # Change entry i, renumber and recompute every later prev: the chain is intact.
        entries = list(LOG.entries)
        entries[i] = replace(entries[i], details={"rewritten": True})
        error = failure(LOG, rows_of(chain(entries)))
        assert error.code == LOG_ROOT_MISMATCH
        first = (i // 100) * 100
        assert error.seq is not None
        assert first <= i <= error.seq < first + 100
        # Delete entry i and renumber everything after it.
        entries = LOG.entries[:i] + LOG.entries[i + 1 :]
        error = failure(LOG, rows_of(chain(entries)))
        assert error.code in (LOG_ROOT_MISMATCH, LOG_TRUNCATED)
        # Insert a forged entry at i and renumber: the log grows past the appender's count.
        forged = replace(make_entry(i, "0" * 64), details={"forged": True})
        entries = [*LOG.entries[:i], forged, *LOG.entries[i:]]
        error = failure(LOG, rows_of(chain(entries)), expected_size=SIZE)
        assert error.code == LOG_SEQUENCE_GAP


def test_truncate_and_refill_is_caught_by_the_checkpoints() -> None:
    entries = [*LOG.entries[:950], *[make_entry(0, "0" * 64) for _ in range(50)]]
    error = failure(LOG, rows_of(chain(entries)))
    assert (error.code, error.seq) == (LOG_ROOT_MISMATCH, 999)


def test_a_forged_or_conflicting_checkpoint_is_refused() -> None:
    mallory = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    forged = sign_checkpoint(Checkpoint(ORIGIN, 500, leaf_hash(b"rewritten")), [mallory])
    with pytest.raises(LogVerificationError) as info:
        load_checkpoints([*LOG.notes, ("forged", forged)], [LOG.verifier], ORIGIN)
    assert info.value.code == LOG_CHECKPOINT_SIGNATURE
    # The forger's key trusted too (say, a stolen data directory): sizes disagree.
    mallory_key = parse_verifier_key(mallory.verifier_key())
    with pytest.raises(LogVerificationError) as info:
        load_checkpoints([*LOG.notes, ("forged", forged)], [LOG.verifier, mallory_key], ORIGIN)
    assert info.value.code == LOG_CHECKPOINT_INCONSISTENT


def test_one_entry_is_proven_by_every_checkpoint_covering_it() -> None:
    entry, covering = verify_entry(LOG.rows, LOG.checkpoints, 250)
    assert entry.seq == 250
    assert [c.size for c in covering] == [300, 400, 500, 600, 700, 800, 900, 1000]
    rows = list(LOG.rows)
    rows[250] = modified(LOG.entries[250], "details")
    with pytest.raises(LogVerificationError) as info:
        verify_entry(rows, LOG.checkpoints, 250)
    assert (info.value.code, info.value.seq) == (LOG_ROOT_MISMATCH, 250)


def test_consistency_bundles_between_checkpoints_verify_and_refuse_a_fork() -> None:
    leaves = [leaf_hash(row.data) for row in LOG.rows]
    notes = dict(LOG.notes)
    bundle = build_consistency_bundle(leaves, notes["cp300"], 300, notes["cp1000"], 1000)
    first, second = verify_consistency_bundle(bundle, [LOG.verifier])
    assert (first.size, second.size) == (300, 1000)
    # A fork: a checkpoint of a rewritten log, signed with the same (stolen) key.
    rows = list(LOG.rows)
    rows[10] = modified(LOG.entries[10], "details")
    forked_leaves = [leaf_hash(row.data) for row in rows]
    forked_root = root_hash(forked_leaves)
    forked_proof = consistency_proof(forked_leaves, 300)
    with pytest.raises(ProofError):
        verify_consistency(300, 1000, LOG.checkpoints[2].root, forked_root, forked_proof)


def test_truncating_entries_no_checkpoint_covers_yet_is_caught_by_the_appenders_count() -> None:
    older = LOG.checkpoints[:9]  # up to 900; entries 900..999 not covered yet
    assert verify_log(LOG.rows, older, expected_size=SIZE).covered == 900
    with pytest.raises(LogVerificationError) as info:
        verify_log(LOG.rows[:950], older, expected_size=SIZE)
    assert (info.value.code, info.value.seq) == (LOG_TRUNCATED, 950)
