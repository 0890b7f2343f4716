"""Keys: device (recipient) keys, issuer signing keys, KEKs, key ids and JWK files.

This layer sits below :mod:`modelseal.envelope` and depends only on
:mod:`modelseal.errors` and pyca/cryptography. Hardware-backed keys plug in
through the :class:`HPKERecipient`, :class:`Signer` and :class:`KEKWrapper`
protocols.
"""

from modelseal.keys.issuer import (
    IssuerKeySet,
    IssuerPrivateKey,
    IssuerPublicKey,
    SignatureAlgorithm,
    Signer,
)
from modelseal.keys.jwk import (
    Key,
    jwk_to_key,
    key_to_jwk,
    load_issuer_key_set,
    load_key,
    parse_jwks,
    save_key,
)
from modelseal.keys.kek import KEK, KEKWrapper
from modelseal.keys.kem import KEM, HPKERecipient, RecipientPrivateKey, RecipientPublicKey, key_id

__all__ = [
    "KEK",
    "KEM",
    "HPKERecipient",
    "IssuerKeySet",
    "IssuerPrivateKey",
    "IssuerPublicKey",
    "KEKWrapper",
    "Key",
    "RecipientPrivateKey",
    "RecipientPublicKey",
    "SignatureAlgorithm",
    "Signer",
    "jwk_to_key",
    "key_id",
    "key_to_jwk",
    "load_issuer_key_set",
    "load_key",
    "parse_jwks",
    "save_key",
]
