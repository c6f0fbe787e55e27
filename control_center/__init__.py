"""The control center: users, sessions, MFA, API keys, policies and audit (port 9080).

`control_center.gate` is the one module the orchestrator imports: it verifies
credentials, checks policies and appends to the audit trail over the shared database
(docs/architecture.md); `control_center.app.create_app` builds the HTTP service;
`control_center.store` holds the tables and every query on them.
"""
