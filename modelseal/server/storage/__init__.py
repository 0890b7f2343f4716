"""Blob stores: where sealed packages (ciphertext only) wait for their download.

Nothing in a blob store is ever backed up: an object lives from issuance until
the device acknowledges it or the sweeper removes it (``blob_ttl_seconds``).
Backing it up would defeat the point of deleting it on acknowledgement.
"""

from modelseal.server.storage.base import BlobNotFoundError, BlobStore, new_blob_key
from modelseal.server.storage.localdir import LocalDirBlobStore

__all__ = ["BlobNotFoundError", "BlobStore", "LocalDirBlobStore", "new_blob_key"]
