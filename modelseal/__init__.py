"""modelseal: seal per-user ML models to the device they are issued to.

Layers, each importing only the ones below it:

* :mod:`modelseal.errors` - the one exception hierarchy, with stable codes.
* :mod:`modelseal.keys` - device keys (X25519, P-256, X-Wing), issuer keys
  (Ed25519, ES256), KEKs, key ids and JWK files.
* :mod:`modelseal.envelope` - FORMAT v1: HPKE-wrapped DEK, issuer signature,
  C2SP chunked AES-256-GCM body; streaming, in-memory and random access.
* :mod:`modelseal.cli` - the ``modelseal`` command, a thin shell over the above.
"""

__version__ = "0.1.0"
