"""Harness around generated samples: load tests against a bare FastAPI baseline.

Modules are imported by the command that needs them (`generator.harness.loadtest` for
`bulwark loadtest`), so this package imports nothing itself.
"""
