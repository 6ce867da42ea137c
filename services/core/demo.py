"""Demo and benchmark data: realistic marketplace orders, written with COPY."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta

from services.core.db.pool import Connection

COLUMNS = (
    "org_id",
    "account_id",
    "ebay_order_id",
    "sale_date",
    "item_name",
    "qty",
    "sale_price_cents",
    "fees_cents",
    "shipping_cents",
    "cost_cents",
    "status",
)
ITEMS = (
    ("Apple AirPods Pro 2nd Gen", 18_999),
    ("Sony WH-1000XM5 Headphones", 27_999),
    ("Nintendo Switch OLED - White", 31_999),
    ("Mid-Century Teak Side Table", 14_500),
    ("Vintage Levi's 501 Jeans W32 L34", 6_450),
    ("Pokémon Booster Box (Scarlet/Violet)", 13_999),
    ("Café Racer Leather Jacket, size M", 21_000),
    ("Crème Brûlée Torch Kit", 2_899),
    ("Dyson V11 Animal Cordless", 39_900),
    ("0042 Replacement Filter", 1_999),
    ('Lego Technic 42115 "Sián"', 34_999),
    ("=HYPERLINK Vintage Poster", 4_500),
)
STATUSES = (
    "paid",
    "shipped",
    "shipped",
    "delivered",
    "delivered",
    "delivered",
    "cancelled",
    "refunded",
)


def order_id(index: int) -> str:
    """A marketplace-looking order id, unique per index (a bijection mod 10^10)."""
    x = (index * 2_654_435_761 + 1_234_567) % 10**10
    return f"{10 + (index // 10**10) % 90:02d}-{x // 10**5:05d}-{x % 10**5:05d}"


def records(
    org_id: str,
    account_id: str,
    rows: int,
    *,
    start: int = 0,
    seed: int = 42,
    until: date | None = None,
) -> Iterator[tuple[object, ...]]:
    """``rows`` orders of the last year, generated lazily (constant memory)."""
    rng = random.Random(seed + start)  # noqa: S311 - demo data, not secrets
    last = until or date.today()  # noqa: DTZ011 - a calendar date for demo data
    for i in range(start, start + rows):
        item, base = ITEMS[rng.randrange(len(ITEMS))]
        qty = rng.choice((1, 1, 1, 2, 3))
        price = int(base * qty * rng.uniform(0.8, 1.2))
        yield (
            org_id,
            account_id,
            order_id(i),
            last - timedelta(days=rng.randrange(365)),
            item,
            qty,
            price,
            price * 13 // 100,
            rng.choice((0, 499, 899, 1299)),
            int(price * rng.uniform(0.3, 0.7)),
            STATUSES[rng.randrange(len(STATUSES))],
        )


async def seed(conn: Connection, *, org_id: str, account_id: str, rows: int) -> int:
    """Append ``rows`` demo records for one account with binary COPY; returns the count."""
    start = await conn.fetchval(
        "SELECT count(*) FROM bookkeeping_records WHERE org_id = $1 AND account_id = $2",
        org_id,
        account_id,
    )
    await conn.copy_records_to_table(
        "bookkeeping_records",
        records=records(org_id, account_id, rows, start=start),
        columns=COLUMNS,
    )
    return rows
