"""The HTTP plumbing both apps share, and which imports neither.

- `envelope`: the response envelope, `{"success": true, "data": …}`.
- `errors`: the access errors (`Unauthorized`, `Forbidden`, `RateLimited`) and the one
  place a `DomainError`, or any other exception, becomes an error envelope.
- `access`: who is acting (`Principal`), what an app's guard needs of the access control
  (`Gatekeeper`: authenticate, authorize, audit), and how the audit names an outcome.
- `pagination`, `versioning`, `limits`, `ratelimit`: `limit`/`offset` paging, the
  `Accept` header's API version, what a request may hold, budgets per minute.
- `openapi`: the published documents made to match what the servers accept.

The orchestrator's API (`orchestrator.api`) and the control center (`control_center`)
both build on this package; nothing here imports either of them.
"""
