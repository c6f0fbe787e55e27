"""The orchestrator's HTTP API: controllers translate HTTP to service calls and back."""
