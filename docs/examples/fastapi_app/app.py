"""A small inventory API: quick reads, a validated write, and a route that fails now and then."""

import asyncio
import math
import random

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

app = FastAPI(title="inventory (example)")
KNOWN_ITEMS = 500  # ids above this are 404s


async def work(median_ms: float) -> None:
    """Wait a log-normal time around `median_ms`, as real handlers vary."""
    await asyncio.sleep(random.lognormvariate(math.log(median_ms), 0.5) / 1000)


class Stock(BaseModel):
    quantity: int = Field(ge=0)  # a negative quantity is a 422, FastAPI's validation error


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/items")
async def list_items():
    await work(40)
    return {"results": [{"id": i} for i in range(1, 21)]}


@app.get("/items/{item_id}")
async def get_item(item_id: int):
    await work(10)
    if item_id > KNOWN_ITEMS:
        raise HTTPException(status_code=404, detail=f"No item {item_id}.")
    return {"id": item_id, "quantity": item_id % 17}


@app.put("/items/{item_id}")
async def set_stock(item_id: int, stock: Stock):
    await work(25)
    return {"id": item_id, "quantity": stock.quantity}


@app.post("/items/{item_id}/reserve", status_code=201)
async def reserve(item_id: int):
    await work(80)
    if item_id % 7 == 0:  # the warehouse service is unreachable for these
        raise HTTPException(status_code=503, detail="Warehouse unavailable.")
    if item_id % 4 == 0:
        raise HTTPException(status_code=409, detail="Out of stock.")
    return {"id": item_id, "reserved": 1}
