"""The bare FastAPI app every load-test ratio is measured against.

One route, declared the way a plain FastAPI user writes it; the generated service's /health
answers the same JSON, so the ratio prices everything the template adds. It runs on the
generated project's interpreter (same fastapi/uvicorn), so it imports nothing from Bulwark.
"""

from fastapi import FastAPI  # type: ignore[import-not-found,unused-ignore]

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    """Same body as the service's /health; the return annotation is its response model."""
    return {"status": "ok"}
