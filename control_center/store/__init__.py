"""The control center's store: its tables and every query on them.

One module per concern (`users`, `sessions`, `api_keys`, `policies`, `audit`), the
values they take and return (`records`), and the tables (`models`). Nothing here
knows of HTTP, tokens, keys or policy evaluation: callers pass what is to be stored
(digests, sealed secrets, hashes) and get typed records back.
"""
