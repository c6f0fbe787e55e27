"""The web console: server-rendered pages over the public API, at `/ui` (docs/ui.md)."""
