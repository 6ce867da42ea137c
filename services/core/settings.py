"""Settings: one frozen Struct read from ``FERRY_*`` environment variables.

Loaded once by ``services.cli`` and passed down; nothing reads the environment
anywhere else, so tests build ``Settings(...)`` directly. Each field carries its
meaning in ``Meta(description=…)``: ``ferry settings`` and the README table are
printed from there.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from services.core.errors import SettingsError

PREFIX = "FERRY_"
# FERRY_URL and FERRY_TOKEN tell the client (`ferry export …`) where and who; not settings.
CLIENT_VARIABLES = frozenset({"url", "token"})
PACKAGE_DIR = Path(__file__).resolve().parent

Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SECRET = {"secret": True}  # Meta extra: `ferry settings` masks the value


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every knob Ferry has; each maps to ``FERRY_<NAME>`` (see the README table)."""

    # Servers. Empty means "not configured": `ferry dev` then starts embedded ones.
    database_url: Annotated[
        str,
        Meta(description="PostgreSQL URL. Empty: `ferry dev` starts an embedded PostgreSQL."),
    ] = ""
    redis_url: Annotated[
        str,
        Meta(description="Redis URL. Empty: `ferry dev` starts an embedded Valkey."),
    ] = ""
    db_pool_min: Annotated[
        Positive,
        Meta(description="Minimum PostgreSQL connections per process."),
    ] = 1
    db_pool_max: Annotated[
        Positive,
        Meta(description="Maximum PostgreSQL connections per process."),
    ] = 10

    # Object storage: S3 when a bucket is set, a local folder otherwise.
    storage_dir: Annotated[
        str,
        Meta(description="Folder for exports and uploads when no S3 bucket is set."),
    ] = ".ferry/storage"
    s3_bucket: Annotated[
        str,
        Meta(description="S3 bucket; setting it switches storage to S3."),
    ] = ""
    s3_endpoint_url: Annotated[
        str,
        Meta(description="S3 endpoint (MinIO, moto, …); empty for AWS."),
    ] = ""
    s3_region: Annotated[
        str,
        Meta(description="S3 region."),
    ] = "us-east-1"
    s3_access_key_id: Annotated[
        str,
        Meta(description="S3 access key; empty uses the default AWS credential chain."),
    ] = ""
    s3_secret_access_key: Annotated[
        str,
        Meta(description="S3 secret key.", extra=SECRET),
    ] = ""
    s3_public_url: Annotated[
        str,
        Meta(
            description="S3 endpoint as browsers reach it, for presigned download links; "
            "empty: FERRY_S3_ENDPOINT_URL.",
        ),
    ] = ""
    s3_part_size: Annotated[
        int,
        Meta(
            ge=5 * 1024 * 1024,
            description="Multipart upload part size in bytes (at least 5 MiB).",
        ),
    ] = 8 * 1024 * 1024

    # HTTP.
    host: Annotated[
        str,
        Meta(description="Address the api binds to."),
    ] = "127.0.0.1"
    port: Annotated[
        Port,
        Meta(description="Port the api listens on."),
    ] = 8000
    cors_origins: Annotated[
        str,
        Meta(
            description="Comma-separated origins (`https://app.example.com`) whose pages may "
            "call the api from a browser; empty: none. `*` is refused.",
        ),
    ] = ""
    rate_limit_user: Annotated[
        NonNegative,
        Meta(description="Requests one user may make per rate-limit window; 0: no limit."),
    ] = 600
    rate_limit_org: Annotated[
        NonNegative,
        Meta(description="Requests all users of one org may make per window; 0: no limit."),
    ] = 3000
    rate_limit_window_seconds: Annotated[
        Positive,
        Meta(description="The rate-limit window in seconds (limits refill evenly over it)."),
    ] = 60

    # Authentication. Bearer tokens are HS256 with the secret, or RS256 via JWKS.
    jwt_secret: Annotated[
        str,
        Meta(
            description="HS256 secret for bearer tokens and event-link tokens. "
            "`ferry dev` makes one.",
            extra=SECRET,
        ),
    ] = ""
    jwt_jwks_url: Annotated[
        str,
        Meta(description="JWKS URL; when set, bearer tokens must be RS256 signed by its keys."),
    ] = ""
    jwt_audience: Annotated[
        str,
        Meta(description="Required `aud` claim of bearer tokens."),
    ] = "ferry"
    jwt_issuer: Annotated[
        str,
        Meta(description="Required `iss` claim of bearer tokens."),
    ] = "ferry"
    events_token_ttl: Annotated[
        Positive,
        Meta(
            description="Seconds the token in a job's `links.events` lasts once the job has "
            "ended (while it runs, it always opens the job's events).",
        ),
    ] = 600
    events_feed_ttl: Annotated[
        Positive,
        Meta(description="Lifetime in seconds of the token in `GET /v1/jobs`' `links.events`."),
    ] = 24 * 3600

    # Exports.
    direct_export_max_rows: Annotated[
        Positive,
        Meta(description="Rows above which a direct export answers 413."),
    ] = 10_000
    export_ttl_days: Annotated[
        Positive,
        Meta(description="Days an export file is kept before it expires."),
    ] = 7
    download_url_ttl: Annotated[
        Positive,
        Meta(description="Lifetime in seconds of a presigned download URL."),
    ] = 900
    max_exports_per_user: Annotated[
        Positive,
        Meta(description="Exports that run at once per user; more wait queued."),
    ] = 3
    max_queued_jobs_per_user: Annotated[
        Positive,
        Meta(description="Jobs one user may have waiting to start; more are refused (429)."),
    ] = 20
    xlsx_engine: Annotated[
        Literal["postgres", "xlsxwriter"],
        Meta(
            description="XLSX writer: `postgres` (PostgreSQL writes the sheet XML) or "
            "`xlsxwriter` (reference).",
        ),
    ] = "postgres"
    export_temp_dir: Annotated[
        str,
        Meta(description="Folder for files the xlsxwriter engine writes; empty: the temp folder."),
    ] = ""

    # Imports.
    import_max_bytes: Annotated[
        Positive,
        Meta(description="Largest accepted upload in bytes."),
    ] = 50 * 1024 * 1024
    rollback_window_hours: Annotated[
        Positive,
        Meta(description="Hours during which a committed import can be rolled back."),
    ] = 24
    batch_retention_days: Annotated[
        Positive,
        Meta(description="Days import batches are kept before they are purged."),
    ] = 90
    import_max_rows: Annotated[
        Positive,
        Meta(description="Most records one import may have."),
    ] = 2_000_000
    import_max_columns: Annotated[
        Positive,
        Meta(description="Most columns an imported file may have."),
    ] = 500
    import_max_field_chars: Annotated[
        Positive,
        Meta(description="Most characters one value of an imported file may hold."),
    ] = 65_536
    import_max_unpacked_bytes: Annotated[
        Positive,
        Meta(description="Most bytes an uploaded workbook may unpack to (zip-bomb guard)."),
    ] = 512 * 1024 * 1024
    import_sheet_memory_bytes: Annotated[
        int,
        Meta(
            ge=256 * 1024 * 1024,
            description="Memory (address space) of the process that reads one workbook; "
            "a sheet whose used range needs more is refused (64 bytes a cell).",
        ),
    ] = 1024 * 1024 * 1024
    upload_url_ttl: Annotated[
        Positive,
        Meta(description="Lifetime in seconds of a direct upload URL (POST /v1/uploads)."),
    ] = 900
    import_keep_days: Annotated[
        Positive,
        Meta(
            description="Days an import that was never committed keeps its upload and staged rows.",
        ),
    ] = 7

    # Worker.
    worker_concurrency: Annotated[
        Positive,
        Meta(description="Jobs one worker runs at once."),
    ] = 4
    job_lease_seconds: Annotated[
        Positive,
        Meta(description="Lease a worker holds on a running job; renewed while it runs."),
    ] = 60
    job_timeout_seconds: Annotated[
        Positive,
        Meta(description="Longest a single job may run."),
    ] = 3600
    job_max_crashes: Annotated[
        Positive,
        Meta(
            description="Times a job may take its worker down (killed, out of memory) "
            "before it fails instead of running again.",
        ),
    ] = 3
    worker_drain_seconds: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(
            description="On SIGTERM, seconds a worker lets running jobs finish before it "
            "hands the rest to other workers.",
        ),
    ] = 30.0

    # Events.
    sse_heartbeat_seconds: Annotated[
        float,
        Meta(gt=0, description="Seconds between SSE heartbeat comments."),
    ] = 15.0
    event_retention_seconds: Annotated[
        Positive,
        Meta(description="Seconds job event streams are kept in Redis."),
    ] = 7 * 24 * 3600

    # Webhooks.
    webhook_timeout_seconds: Annotated[
        float,
        Meta(gt=0, description="Seconds an endpoint has to answer a webhook with a 2xx."),
    ] = 10.0
    webhook_retry_seconds: Annotated[
        float,
        Meta(gt=0, description="Delay before the first webhook retry; it doubles each time."),
    ] = 30.0
    webhook_retry_max_seconds: Annotated[
        float,
        Meta(gt=0, description="Longest delay between two webhook retries."),
    ] = 3600.0
    webhook_retry_window_seconds: Annotated[
        float,
        Meta(gt=0, description="Seconds a webhook is retried before it is marked failed."),
    ] = 24 * 3600.0
    webhook_endpoint_concurrency: Annotated[
        Positive,
        Meta(description="Webhook deliveries in flight at once per endpoint, over all workers."),
    ] = 4
    webhook_secret_grace_seconds: Annotated[
        Positive,
        Meta(description="Seconds a rotated-out webhook secret still signs deliveries."),
    ] = 24 * 3600
    webhook_secret_keys: Annotated[
        str,
        Meta(
            description="Comma-separated keys (any text) sealing webhook signing secrets in "
            "the database; the first seals, each opens. Empty: derived from FERRY_JWT_SECRET.",
            extra=SECRET,
        ),
    ] = ""
    webhook_allow_http: Annotated[
        bool,
        Meta(description="Accept `http://` webhook URLs (else https only); for development."),
    ] = False
    webhook_allow_private: Annotated[
        bool,
        Meta(
            description="Deliver webhooks to private and loopback addresses "
            "(never link-local or multicast)."
        ),
    ] = False
    webhook_allow_cidrs: Annotated[
        str,
        Meta(
            description="Comma-separated networks webhooks may reach although not public, "
            "e.g. `10.1.0.0/16`."
        ),
    ] = ""
    webhook_ca_file: Annotated[
        str,
        Meta(
            description="PEM file of certificate authorities trusted for webhook receivers "
            "beside the public ones (a private CA); empty: the public ones only."
        ),
    ] = ""
    webhook_log_days: Annotated[
        Positive,
        Meta(description="Days finished webhook deliveries stay in the delivery log."),
    ] = 30

    # Datasets and housekeeping.
    datasets_dir: Annotated[
        str,
        Meta(description="Folder of dataset TOML files."),
    ] = str(PACKAGE_DIR / "datasets")
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        Meta(description="DEBUG, INFO, WARNING or ERROR."),
    ] = "INFO"
    log_format: Annotated[
        Literal["text", "json"],
        Meta(description="`text` (local) or `json` (deployment)."),
    ] = "text"

    def __post_init__(self) -> None:
        self.webhook_networks  # noqa: B018 - a malformed network stops start-up here
        if self.webhook_ca_file:
            self.webhook_trust()  # so does a CA file that cannot be read

    def webhook_trust(self) -> ssl.SSLContext:
        """What a webhook receiver's certificate is checked against: the public
        authorities (certifi's, as httpx uses) and those of ``webhook_ca_file``."""
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
        if self.webhook_ca_file:
            try:
                context.load_verify_locations(cafile=self.webhook_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"FERRY_WEBHOOK_CA_FILE: {exc}") from None
        return context

    @property
    def storage_backend(self) -> Literal["s3", "local"]:
        return "s3" if self.s3_bucket else "local"

    @property
    def webhook_networks(self) -> list[IPNetwork]:
        """``webhook_allow_cidrs`` parsed; ValueError naming the variable if malformed."""
        found = []
        for part in filter(None, (p.strip() for p in self.webhook_allow_cidrs.split(","))):
            try:
                found.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"FERRY_WEBHOOK_ALLOW_CIDRS: {part!r} is not a network") from None
        return found


_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")
_AT_FIELD = re.compile(r"at `\$\.(?P<name>[^`]+)`")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def _given(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``FERRY_*`` variables set to something, by setting name (empty means default)."""
    given = {
        key[len(PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(PREFIX) and value != ""
    }
    return {name: value for name, value in given.items() if name not in CLIENT_VARIABLES}


def required(settings: Settings, name: Literal["database_url", "redis_url"]) -> str:
    """A server URL every command but ``ferry dev`` needs: never libpq's or Redis's defaults."""
    value: str = getattr(settings, name)
    if not value:
        raise SettingsError(f"FERRY_{name.upper()} is not set (`ferry dev` starts an embedded one)")
    return value


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build Settings from ``FERRY_*`` variables; unknown names are an error."""
    try:
        return msgspec.convert(_given(environ), Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if unknown := _UNKNOWN_FIELD.search(message):
            name = PREFIX + unknown["name"].upper()
            raise SettingsError(f"{name} is not a Ferry setting (see the README table)") from None
        if at := _AT_FIELD.search(message):
            name = PREFIX + at["name"].upper()
            raise SettingsError(f"{name}: {message.split(' - at ')[0]}") from None
        raise SettingsError(message) from None


def _metas() -> dict[str, Meta]:
    """Each field's ``Meta`` holding its description."""
    hints = get_type_hints(Settings, include_extras=True)
    return {
        name: next(m for m in get_args(hints[name]) if isinstance(m, Meta) and m.description)
        for name in Settings.__struct_fields__
    }


def descriptions() -> dict[str, str]:
    """The meaning of each setting, in field order."""
    return {name: str(meta.description) for name, meta in _metas().items()}


def markdown_table() -> str:
    """The README's table: every variable, its default and its meaning."""
    defaults = Settings()
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, meaning in descriptions().items():
        value = getattr(defaults, name)
        if name == "datasets_dir":
            shown = "(the packaged datasets)"  # an absolute path of this checkout otherwise
        else:
            shown = f"`{value}`" if value != "" else "(empty)"
        rows.append(f"| `{PREFIX}{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)


def environ(settings: Settings) -> dict[str, str]:
    """The ``FERRY_*`` variables that load back into ``settings`` (those off their default)."""
    defaults = Settings()
    return {
        PREFIX + name.upper(): str(getattr(settings, name))
        for name in Settings.__struct_fields__
        if getattr(settings, name) != getattr(defaults, name)
    }


def _masked(value: Any, secret: bool) -> str:
    text = str(value)
    if not text:
        return "(empty)"
    if secret:
        return "***"
    url = urlsplit(text)
    if url.password is not None:
        host = url.netloc.rpartition("@")[2]
        text = url._replace(netloc=f"{url.username or ''}:***@{host}").geturl()
    return _QUERY_PASSWORD.sub(r"\1***", text)  # libpq also takes ?password=


def in_effect(environ: Mapping[str, str]) -> list[str]:
    """``ferry settings``: each value Ferry would run with, whence it came, secrets masked.

    Loading refuses unknown or malformed ``FERRY_*`` variables like every command does.
    """
    settings = load_settings(environ)
    given = _given(environ)
    width = max(len(PREFIX + name) for name in Settings.__struct_fields__)
    return [
        f"{PREFIX + name.upper():<{width}}  {'env' if name in given else 'default':<7}  "
        + _masked(getattr(settings, name), bool((meta.extra or {}).get("secret")))
        for name, meta in _metas().items()
    ]
