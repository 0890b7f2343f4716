"""Domain services: issuance, devices, accounts and auth, download links, keyring, events.

Services own their transactions and never import the web framework; the API layer
calls them and shapes their results into responses.
"""
