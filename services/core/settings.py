"""Settings: one frozen Struct read from ``FERRY_*`` environment variables.

Loaded once by ``services.cli`` and passed down; nothing reads the environment
anywhere else, so tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from services.core.errors import SettingsError

PREFIX = "FERRY_"
PACKAGE_DIR = Path(__file__).resolve().parent

Positive = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob Ferry has; each maps to ``FERRY_<NAME>`` (see the README table)."""

    # Servers. Empty means "not configured": `ferry dev` then starts embedded ones.
    database_url: str = ""
    redis_url: str = ""
    db_pool_min: Positive = 1
    db_pool_max: Positive = 10

    # Object storage: S3 when a bucket is set, a local folder otherwise.
    storage_dir: str = ".ferry/storage"
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_part_size: Annotated[int, msgspec.Meta(ge=5 * 1024 * 1024)] = 8 * 1024 * 1024

    # HTTP.
    host: str = "127.0.0.1"
    port: Port = 8000

    # Authentication. Bearer tokens are HS256 with the secret, or RS256 via JWKS.
    jwt_secret: str = ""
    jwt_jwks_url: str = ""
    jwt_audience: str = "ferry"
    jwt_issuer: str = "ferry"
    events_token_ttl: Positive = 600

    # Exports.
    direct_export_max_rows: Positive = 10_000
    export_ttl_days: Positive = 7
    download_url_ttl: Positive = 900
    max_exports_per_user: Positive = 3
    xlsx_engine: Literal["rust", "xlsxwriter"] = "rust"
    export_temp_dir: str = ""

    # Imports.
    import_max_bytes: Positive = 50 * 1024 * 1024
    rollback_window_hours: Positive = 24
    batch_retention_days: Positive = 90
    import_max_rows: Positive = 2_000_000
    import_max_columns: Positive = 500
    import_max_field_chars: Positive = 65_536
    import_max_unpacked_bytes: Positive = 512 * 1024 * 1024
    import_keep_days: Positive = 7

    # Worker.
    worker_concurrency: Positive = 4
    job_lease_seconds: Positive = 60
    job_timeout_seconds: Positive = 3600

    # Events.
    sse_heartbeat_seconds: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    event_retention_seconds: Positive = 7 * 24 * 3600

    # Datasets and housekeeping.
    datasets_dir: str = str(PACKAGE_DIR / "datasets")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @property
    def storage_backend(self) -> Literal["s3", "local"]:
        return "s3" if self.s3_bucket else "local"


# Meaning of each setting, for `ferry settings` and the README table.
DESCRIPTIONS: dict[str, str] = {
    "database_url": "PostgreSQL URL. Empty: `ferry dev` starts an embedded PostgreSQL.",
    "redis_url": "Redis URL. Empty: `ferry dev` starts an embedded Valkey.",
    "db_pool_min": "Minimum PostgreSQL connections per process.",
    "db_pool_max": "Maximum PostgreSQL connections per process.",
    "storage_dir": "Folder for exports and uploads when no S3 bucket is set.",
    "s3_bucket": "S3 bucket; setting it switches storage to S3.",
    "s3_endpoint_url": "S3 endpoint (MinIO, moto, …); empty for AWS.",
    "s3_region": "S3 region.",
    "s3_access_key_id": "S3 access key; empty uses the default AWS credential chain.",
    "s3_secret_access_key": "S3 secret key.",
    "s3_part_size": "Multipart upload part size in bytes (at least 5 MiB).",
    "host": "Address the api binds to.",
    "port": "Port the api listens on.",
    "jwt_secret": "HS256 secret for bearer tokens and event-link tokens. `ferry dev` makes one.",
    "jwt_jwks_url": "JWKS URL; when set, bearer tokens must be RS256 signed by its keys.",
    "jwt_audience": "Required `aud` claim of bearer tokens.",
    "jwt_issuer": "Required `iss` claim of bearer tokens.",
    "events_token_ttl": "Lifetime in seconds of the token in a job's `links.events`.",
    "direct_export_max_rows": "Rows above which a direct export answers 413.",
    "export_ttl_days": "Days an export file is kept before it expires.",
    "download_url_ttl": "Lifetime in seconds of a presigned download URL.",
    "max_exports_per_user": "Exports that run at once per user; more wait queued.",
    "xlsx_engine": "XLSX writer: `rust` (rustpy-xlsxwriter, fast) or `xlsxwriter` (reference).",
    "export_temp_dir": "Folder for XLSX files being written; empty: the system temp folder.",
    "import_max_bytes": "Largest accepted upload in bytes.",
    "rollback_window_hours": "Hours during which a committed import can be rolled back.",
    "batch_retention_days": "Days import batches are kept before they are purged.",
    "import_max_rows": "Most records one import may have.",
    "import_max_columns": "Most columns an imported file may have.",
    "import_max_field_chars": "Most characters one value of an imported file may hold.",
    "import_max_unpacked_bytes": "Most bytes an uploaded XLSX may unpack to (zip-bomb guard).",
    "import_keep_days": "Days an import that was never committed keeps its upload and staged rows.",
    "worker_concurrency": "Jobs one worker runs at once.",
    "job_lease_seconds": "Lease a worker holds on a running job; renewed while it runs.",
    "job_timeout_seconds": "Longest a single job may run.",
    "sse_heartbeat_seconds": "Seconds between SSE heartbeat comments.",
    "event_retention_seconds": "Seconds job event streams are kept in Redis.",
    "datasets_dir": "Folder of dataset TOML files.",
    "log_level": "DEBUG, INFO, WARNING or ERROR.",
    "log_format": "`text` (local) or `json` (deployment).",
}

_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")
_AT_FIELD = re.compile(r"at `\$\.(?P<name>[^`]+)`")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from ``FERRY_*`` variables; unknown names are an error."""
    raw = {
        key[len(PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(PREFIX) and value != ""
    }
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if unknown := _UNKNOWN_FIELD.search(message):
            name = PREFIX + unknown["name"].upper()
            raise SettingsError(f"{name} is not a Ferry setting (see the README table)") from None
        if at := _AT_FIELD.search(message):
            name = PREFIX + at["name"].upper()
            raise SettingsError(f"{name}: {message.split(' - at ')[0]}") from None
        raise SettingsError(message) from None
