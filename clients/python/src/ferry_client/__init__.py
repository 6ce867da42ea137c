"""ferry_client: Ferry's api from Python, blocking (``Ferry``) or asyncio (``AsyncFerry``).

from ferry_client import Ferry

with Ferry() as ferry:  # $FERRY_URL, $FERRY_TOKEN
    job = ferry.export("bookkeeping_records", "xlsx", preset="financial",
                       account_id="main", filters={"sale_date_from": "2026-01-01"})
    job.wait(progress=lambda p: print(p.done, p.total))
    job.download("year.xlsx")  # sha256 checked

    imp = ferry.import_file("orders.csv", "bookkeeping_records", "main").wait()
    imp.set_mapping({"Total Price": "sale_price"}).wait()
    imp.commit(on_error="skip")
"""

from ferry_client._async import AsyncExportJob, AsyncFerry, AsyncImportJob
from ferry_client._base import __version__
from ferry_client._exceptions import (
    ApiError,
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    FerryError,
    FieldError,
    Forbidden,
    Gone,
    Invalid,
    InvalidSignature,
    JobCancelled,
    JobFailed,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from ferry_client._sync import ExportJob, Ferry, ImportJob
from ferry_client.models import Progress
from ferry_client.webhooks import verify_signature

__all__ = [
    "ApiError",
    "AsyncExportJob",
    "AsyncFerry",
    "AsyncImportJob",
    "ChecksumMismatch",
    "Conflict",
    "ConnectionFailed",
    "ExportJob",
    "Ferry",
    "FerryError",
    "FieldError",
    "Forbidden",
    "Gone",
    "ImportJob",
    "Invalid",
    "InvalidSignature",
    "JobCancelled",
    "JobFailed",
    "NotFound",
    "Progress",
    "RateLimited",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "__version__",
    "verify_signature",
]
