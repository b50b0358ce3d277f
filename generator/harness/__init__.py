"""Harness around generated samples, by job.

- `load/`: `bulwark loadtest`, a generated service against bare FastAPI under wrk;
- `chaos/`: `bulwark chaos`, its dependencies broken under load;
- `apps/`: the bare apps served beside it;
- shared: `project` (a generated project, its environment and database), `servers`
  (starting and stopping them), `machine` (what the machine must have, pinning), `procfs`
  (CPU, children and sockets from /proc), `wrk`, `nginx`;
- `matrix`, `pairwise`: `bulwark matrix`, every answer set rendered and checked.

Modules are imported by the command that needs them, so this package imports nothing itself.
"""
