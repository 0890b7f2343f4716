"""The audit library: canonical entries, RFC 9162 Merkle trees, signed checkpoints.

Pure library (no server, database or web imports), so an auditor can verify a proof
bundle offline:

* :mod:`modelseal.audit.canonical` - canonical JSON (the RFC 8785 subset without floats);
* :mod:`modelseal.audit.entry` - the audit entry format and its checks;
* :mod:`modelseal.audit.merkle` - leaf/node hashing, tree heads, inclusion and
  consistency proofs (RFC 9162 §2.1);
* :mod:`modelseal.audit.note` / :mod:`modelseal.audit.checkpoint` - C2SP signed notes
  and tlog checkpoints;
* :mod:`modelseal.audit.verify` - whole-log verification against checkpoints, and
  proof bundles.

See docs/AUDIT.md.
"""
