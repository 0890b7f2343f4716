"""Cut the RFC 9180 test-vector file down to the entries modelseal's suites can use.

The official file (cfrg/draft-irtf-cfrg-hpke ``test-vectors.json`` at commit 5f503c5,
5.9 MB) holds 128 entries. FORMAT v1 uses HPKE base mode with HKDF-SHA256 and
AES-256-GCM, over DHKEM(P-256) or DHKEM(X25519); the other KEMs of FORMAT v1 (X-Wing) are
not in RFC 9180. This script keeps only those entries (mode 0, kem_id 0x0010 or 0x0020,
kdf_id 1, aead_id 2), only the members the tests read, and only the first encryption
(sequence number 0: the single-shot API cannot reach later ones). Values are copied
unchanged.

Usage::

    python tests/data/extract_rfc9180.py SOURCE.json [OUTPUT.json]

OUTPUT defaults to ``hpke/rfc9180-base-sha256-aes256gcm.json`` next to this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KEPT_KEMS = (0x0010, 0x0020)
KEPT_MEMBERS = (
    "mode",
    "kem_id",
    "kdf_id",
    "aead_id",
    "info",
    "skRm",
    "pkRm",
    "skEm",
    "pkEm",
    "enc",
    "shared_secret",
    "key",
    "base_nonce",
)
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "hpke" / "rfc9180-base-sha256-aes256gcm.json"


def extract(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the kept entries, each reduced to the kept members and its first encryption."""
    kept = []
    for entry in entries:
        if (
            entry["mode"] == 0
            and entry["kem_id"] in KEPT_KEMS
            and entry["kdf_id"] == 1
            and entry["aead_id"] == 2
        ):
            reduced = {name: entry[name] for name in KEPT_MEMBERS}
            reduced["encryptions"] = entry["encryptions"][:1]
            kept.append(reduced)
    return kept


def main(argv: list[str]) -> int:
    """Command-line entry point; see the module docstring."""
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[1])
    output = Path(argv[2]) if len(argv) == 3 else DEFAULT_OUTPUT
    kept = extract(json.loads(source.read_text(encoding="utf-8")))
    output.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    print(f"kept {len(kept)} entries -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
