"""The control center: users, sessions, MFA, API keys, policies and audit (port 9080).

`control_center.guard` is the surface the orchestrator uses to verify credentials and
check policies; `control_center.app.create_app` builds the HTTP service;
`control_center.store` holds the tables and every query on them.
"""
