"""PostgreSQL access over asyncpg: the pool, queries per resource, and migrations."""
