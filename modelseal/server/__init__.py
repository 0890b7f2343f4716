"""The issuance server: the backend half of modelseal.

Devices register public keys; authenticated users ask for IMLs; a worker generates
each IML in memory, seals it to the device key (FORMAT v1) and stores only the
ciphertext; the device downloads it through a short-lived, device-bound,
single-use link and acknowledges it, and the server deletes its copy.

Entry points: :func:`modelseal.server.app.create_app` (ASGI app) and the Typer
sub-apps in :mod:`modelseal.server.cli`. ``server`` and ``client`` never import
each other.
"""
