"""The bare FastAPI + asyncpg app the database scenarios are measured against.

What a plain FastAPI user writes to serve one row by id: a pool made in the lifespan (the same
sizes as the generated service's defaults), one `fetchrow`, a pydantic response model. It runs
on the generated project's interpreter (same fastapi/uvicorn/asyncpg) and imports nothing from
Bulwark; DATABASE_URL is the migrated database the service uses.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg  # type: ignore[import-not-found,unused-ignore]
from fastapi import FastAPI, HTTPException  # type: ignore[import-not-found,unused-ignore]
from pydantic import BaseModel  # type: ignore[import-not-found,unused-ignore]

SQL = "SELECT id, name, description, created_at FROM items WHERE id = $1"


class Item(BaseModel):  # type: ignore[misc,unused-ignore]
    id: int
    name: str
    description: str | None
    created_at: datetime


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=10, max_size=20)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    row = await app.state.pool.fetchrow(SQL, item_id)
    if row is None:
        raise HTTPException(status_code=404, detail="item not found")
    return Item(**dict(row))
