"""FORMAT v1 in code: the sealed-model container.

``envelope`` is the bottom of modelseal's stack: it knows the wire format and
nothing of servers, clients or storage. It depends only on
:mod:`modelseal.keys` and :mod:`modelseal.errors`.

Sealing::

    to = IssueTo(recipient=device_public_key, signer=issuer_key, claims=claims)
    package = seal_bytes(model_bytes, to, ctype="application/onnx")

Opening::

    policy = OpenPolicy(issuers=pinned_issuers, audience=device_id)
    opened = open_bytes(package, device_private_key, policy)

Streams (:func:`seal_stream`, :func:`open_stream`) and files (:func:`seal_file`,
:func:`open_file`) work in constant memory; :class:`Package` also gives random
access to single chunks and plaintext ranges.
"""

from modelseal.envelope.body import CHUNK_SIZE_BYTES, body_length, chunk_count
from modelseal.envelope.container import MAGIC
from modelseal.envelope.header import Claims, Header, RType, SignatureRef
from modelseal.envelope.reader import (
    OpenedPackage,
    OpenPolicy,
    Package,
    PackageInfo,
    inspect,
    open_bytes,
    open_file,
    open_into,
    open_stream,
)
from modelseal.envelope.seal import (
    DEFAULT_CTYPE,
    AtRest,
    IssueTo,
    SealResult,
    seal_bytes,
    seal_file,
    seal_into,
    seal_stream,
    sealed_size,
)

__all__ = [
    "CHUNK_SIZE_BYTES",
    "DEFAULT_CTYPE",
    "MAGIC",
    "AtRest",
    "Claims",
    "Header",
    "IssueTo",
    "OpenPolicy",
    "OpenedPackage",
    "Package",
    "PackageInfo",
    "RType",
    "SealResult",
    "SignatureRef",
    "body_length",
    "chunk_count",
    "inspect",
    "open_bytes",
    "open_file",
    "open_into",
    "open_stream",
    "seal_bytes",
    "seal_file",
    "seal_into",
    "seal_stream",
    "sealed_size",
]
