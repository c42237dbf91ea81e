"""Configuration: oslo.config options with Glance's names.

An operator can point Glimpse at an existing ``glance-api.conf``: every option
that Glance also has keeps Glance's section and name; options Glance does not
know are ignored (oslo.config's behaviour), and Glimpse's own options live in
sections Glance does not use (``[outbox]``, ``[glimpse]``).

``load(argv)`` parses ``--config-file`` (repeatable) and validates values; a bad
value raises :class:`glimpse.exceptions.ConfigError` naming the option.
``list_opts()`` feeds ``oslo-config-generator`` (see ``etc/``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from oslo_config import cfg

from glimpse.exceptions import ConfigError


class GlanceList(cfg.types.List):
    """A list written as Glance's sample writes it, ``[a,b]`` (items may be quoted),
    or as ``a,b``. Glance declares these options with ``bounds=True``, which
    takes only the first form; oslo.config's plain lists take only the second
    (the brackets would stay in the first and last items)."""

    def __init__(self, item_type: cfg.types.ConfigType) -> None:
        super().__init__(item_type, bounds=True)

    def __call__(self, value: object) -> list[object]:
        if isinstance(value, str) and not value.strip().startswith("["):
            value = f"[{value.strip()}]"
        return super().__call__(value)


def glance_list_opt(name: str, item_type: cfg.types.ConfigType, default: list[object],
                    help: str) -> cfg.Opt:
    """A list option that takes both forms of :class:`GlanceList`."""
    return cfg.Opt(name, type=GlanceList(item_type), default=default, help=help)


default_opts: list[cfg.Opt] = [
    cfg.StrOpt("state_path", default="./glimpse-data",
               help="Top-level directory for Glimpse's local state (SQLite database, "
                    "filesystem store, staging area) when those are not set explicitly, "
                    "and of processes/, where each running process holds a lock."),
    cfg.HostAddressOpt("bind_host", default="127.0.0.1", help="Address to listen on."),
    cfg.PortOpt("bind_port", default=9292, help="Port to listen on."),
    cfg.IntOpt("workers", default=1, min=1, max=64,
               help="Number of API worker processes."),
    cfg.IntOpt("worker_threads", default=2, min=1, max=256,
               help="Threads per API worker process that run the blocking steps of "
                    "requests (database transactions, store and staging I/O); more "
                    "concurrent requests wait for one, on the event loop, without a "
                    "thread. Each worker has one GIL, so two threads keep it busy; "
                    "every extra thread (with the database connection it holds) costs "
                    "resident memory. Raise it for a database with slow round trips "
                    "(PostgreSQL over a network); Keystone's validations have their "
                    "own threads ([glimpse] keystone_threads). "
                    "Separate from [database] max_pool_size, whose connections also "
                    "serve the relay and the task threads."),
    cfg.StrOpt("log_dir",
               help="Directory of log_file when that is relative; with log_dir alone "
                    "the log is <log_dir>/glimpse-api.log (oslo.log's rule, as Glance)."),
    cfg.StrOpt("log_file", help="Log to this file (service log and `log` notifications). "
                                "Default: standard error."),
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG level."),
    cfg.BoolOpt("access_log", default=False,
                help="Log one line per HTTP request (client address, method, path, "
                     "status) at INFO, logger `uvicorn.access`, to log_file."),
    cfg.IntOpt("client_socket_timeout", default=900, min=0,
               help="Seconds a client may send no request body data (an upload, a "
                    "stage) or take no response data (a download) before its connection "
                    "is closed; the upload then fails as a disconnect. Also the time a "
                    "request line and its headers may take to arrive (from the "
                    "connection, or the request's first byte). 0: wait forever."),
    cfg.DictOpt("enabled_backends",
                help="Glance's multi-store form, backend id: type (e.g. fast:file). "
                     "Glimpse serves one filesystem store, as a single store: the "
                     "[glance_store] default_backend (or the only backend), whose "
                     "directory is [<id>] filesystem_store_datadir."),
    cfg.IntOpt("image_size_cap", default=1099511627776, min=1, max=9223372036854775808,
               help="Maximum size of image data in bytes (default 1 TiB)."),
    cfg.StrOpt("user_storage_quota", default="0",
               help="Per-project storage quota: an integer with an optional unit "
                    "(B, KB, MB, GB, TB). 0 means unlimited."),
    cfg.StrOpt("hashing_algorithm", default="sha512",
               help="hashlib algorithm for os_hash_value."),
    cfg.ListOpt("disabled_notifications", default=[],
                help="Event types (or dot-ended prefixes such as `image`, "
                     "`image.member`, `task`) that are never produced."),
    cfg.StrOpt("default_publisher_id",
               help="publisher_id of notifications. Default: image.<short host name>."),
    cfg.StrOpt("transport_url", secret=True,
               help="Messaging transport URL (rabbit://user:pass@host:port/vhost)."),
    cfg.StrOpt("control_exchange", default="glance",
               help="AMQP exchange notifications are published to."),
    cfg.StrOpt("auth_strategy", default="noauth",
               choices=["noauth", "keystone", "token-file"],
               help="How requests are authenticated."),
    cfg.BoolOpt("behind_trusted_proxy", default=False,
                help="Allow auth_strategy=noauth on a non-loopback bind_host: "
                     "a proxy in front sets the identity headers."),
    cfg.ListOpt("trusted_proxies", default=[],
                help="Peer addresses whose X-Forwarded-For header is believed "
                     "(for image.send destination_ip). When set, also the only peers "
                     "whose proxy headers count for [oslo_middleware] "
                     "enable_proxy_headers_parsing."),
    cfg.StrOpt("public_endpoint",
               help="The URL clients reach the API at (e.g. https://image.example.com "
                    "or https://cloud.example.com/image), used for the links of the "
                    "version documents and of Location headers. keystoneauth clients "
                    "(openstacksdk, the openstack CLI) send every request to the "
                    "version document's link, so set this behind a proxy or load "
                    "balancer. Default: the URL of each request as it reached the "
                    "server (see [oslo_middleware] enable_proxy_headers_parsing)."),
    cfg.StrOpt("node_staging_uri", default="file://$state_path/staging",
               help="Where glance-direct imports stage data (file:// only)."),
    # item types, quotes and ``[...]`` bounds as Glance declares them (its sample
    # config writes ``[glance-direct,web-download]``)
    glance_list_opt("enabled_import_methods", default=["glance-direct", "web-download"],
                    item_type=cfg.types.String(choices=["glance-direct", "web-download",
                                                        "copy-image", "glance-download"],
                                               quotes=True),
                    help="Interoperable import methods offered. Glimpse runs glance-direct "
                         "and web-download; copy-image and glance-download (which need a "
                         "second store or cloud) are never offered, even when listed."),
    cfg.StrOpt("property_protection_file", help="Property protection rules file."),
    cfg.StrOpt("property_protection_rule_format", default="roles",
               choices=["roles", "policies"], help="Format of the protection file."),
    cfg.IntOpt("limit_param_default", default=25, min=1, help="Default page size."),
    cfg.IntOpt("api_limit_max", default=1000, min=1, help="Largest page size."),
    cfg.IntOpt("image_member_quota", default=128, help="Members per image (-1: unlimited)."),
    cfg.IntOpt("image_property_quota", default=128, help="Properties per image (-1: unlimited)."),
    cfg.IntOpt("image_tag_quota", default=128, help="Tags per image (-1: unlimited)."),
    cfg.IntOpt("max_json_body_size", default=1048576, min=1024,
               help="Largest JSON request body in bytes (images, members, tasks, "
                    "imports): a larger one is refused with 413 before it is read "
                    "whole. Image data (PUT /file, /stage) is bounded by "
                    "image_size_cap instead."),
]

identity_opts: list[cfg.Opt] = [
    cfg.StrOpt("default_project_id", default="admin",
               help="noauth: project of requests that carry no identity headers."),
    cfg.StrOpt("default_user_id", default="admin",
               help="noauth: user of requests that carry no identity headers."),
    cfg.ListOpt("default_roles", default=["admin", "member", "reader"],
                help="noauth: roles of requests that carry no identity headers."),
    cfg.StrOpt("token_file", default="$state_path/tokens.json",
               help="auth_strategy=token-file: the token database."),
    cfg.IntOpt("keystone_threads", default=8, min=1, max=256,
               help="auth_strategy=keystone: threads per API worker that validate "
                    "tokens (keystonemiddleware blocks on Keystone for a token it has "
                    "not cached). Separate from [DEFAULT] worker_threads, so a slow "
                    "Keystone holds up only requests with uncached tokens: more than "
                    "this many at once wait for a thread. Threads start when needed."),
]

database_opts: list[cfg.Opt] = [
    cfg.StrOpt("connection", secret=True, default="sqlite:///$state_path/glimpse.sqlite",
               help="SQLAlchemy URL of the database."),
    cfg.IntOpt("max_pool_size", default=5, min=1, help="Connections per process."),
]

store_opts: list[cfg.Opt] = [
    cfg.StrOpt("default_store", default="file", help="Store used for new image data."),
    cfg.ListOpt("stores", default=["file", "http"], help="Enabled store schemes."),
    cfg.StrOpt("filesystem_store_datadir", default="$state_path/images",
               help="Directory the filesystem store keeps image data in (unless "
                    "[DEFAULT] enabled_backends names the store)."),
    cfg.StrOpt("default_backend",
               help="With [DEFAULT] enabled_backends (Glance's multi-store form): the "
                    "backend Glimpse stores in, when there are several."),
    cfg.IntOpt("filesystem_store_chunk_size", default=1048576, min=4096,
               help="Read/write chunk size in bytes."),
]

notification_opts: list[cfg.Opt] = [
    cfg.MultiStrOpt("driver", default=[],
                    help="Notification drivers: noop, log, messaging, messagingv2."),
    cfg.ListOpt("topics", default=["notifications"], help="AMQP topics."),
    cfg.StrOpt("transport_url", secret=True,
               help="Transport for notifications; default [DEFAULT] transport_url."),
    cfg.IntOpt("retry", default=-1,
               help="Accepted for compatibility; Glimpse retries until delivered."),
]

# oslo.messaging's TLS options for RabbitMQ, as a glance-api.conf sets them
rabbit_opts: list[cfg.Opt] = [
    cfg.BoolOpt("ssl", default=False,
                help="Connect to RabbitMQ over TLS (also: ?ssl=1 in the transport URL). "
                     "The broker's certificate must be valid for the host name (or "
                     "address) in the transport URL."),
    cfg.StrOpt("ssl_ca_file",
               help="CA bundle that the broker's certificate must chain to (and then "
                    "must: the certificate is verified). Default: the system's CAs."),
    cfg.StrOpt("ssl_cert_file", help="Client certificate, for brokers that require one."),
    cfg.StrOpt("ssl_key_file", help="Private key of ssl_cert_file."),
]

outbox_opts: list[cfg.Opt] = [
    cfg.IntOpt("batch_size", default=500, min=1, help="Events a relay claims at once."),
    cfg.FloatOpt("poll_interval", default=0.2, min=0.01,
                 help="Seconds between outbox polls when idle."),
    cfg.FloatOpt("initial_backoff", default=0.5, min=0.01,
                 help="First retry delay (seconds) after a failed delivery."),
    cfg.FloatOpt("max_backoff", default=30.0, min=0.1, help="Cap of the retry delay."),
    cfg.FloatOpt("lease_seconds", default=15.0, min=1.0,
                 help="How long a relay's claim on a driver lasts without renewal. A "
                      "process of the same machine takes over at once from one that "
                      "exited (its lock in $state_path/processes is free)."),
    cfg.FloatOpt("drain_timeout", default=5.0, min=0.0,
                 help="On shutdown, seconds to keep delivering pending events."),
    cfg.IntOpt("retention_hours", default=24, min=0,
               help="Delivered events are pruned after this many hours."),
    cfg.StrOpt("spool_dir", default="$state_path/event-spool",
               help="Local directory where events wait that could not reach the database "
                    "(an image.send at the end of a download during a database outage): "
                    "recorded from there once it is back, or at the next start."),
    cfg.BoolOpt("declare_queues", default=True,
                help="Declare and bind a queue per routing key, as oslo.messaging does, "
                     "so events wait for consumers that start later."),
]

middleware_opts: list[cfg.Opt] = [
    cfg.BoolOpt("enable_proxy_headers_parsing", default=False,
                help="Build links from what a reverse proxy says of the original "
                     "request (Forwarded, or X-Forwarded-Proto and X-Forwarded-Host; "
                     "and X-Forwarded-Prefix), as Glance does with oslo.middleware. "
                     "The proxy must set or overwrite these headers. "
                     "[DEFAULT] public_endpoint, when set, wins."),
]

# oslo.middleware's CORS options, with the defaults Glance sets for them
cors_opts: list[cfg.Opt] = [
    cfg.ListOpt("allowed_origin",
                help="Origins (scheme://host[:port]) whose browser scripts may call the "
                     "API, e.g. Horizon's with HORIZON_IMAGES_UPLOAD_MODE = 'direct'. "
                     "Unset: no CORS headers, preflight requests are refused."),
    cfg.BoolOpt("allow_credentials", default=True,
                help="Tell browsers they may send credentials (cookies, HTTP auth)."),
    cfg.ListOpt("expose_headers", default=["X-Image-Meta-Checksum", "X-Auth-Token",
                                           "X-Subject-Token", "X-Service-Token",
                                           "X-OpenStack-Request-ID"],
                help="Response headers browser scripts may read."),
    cfg.IntOpt("max_age", default=3600, min=0,
               help="Seconds browsers may cache a preflight answer."),
    cfg.ListOpt("allow_methods", default=["GET", "PUT", "POST", "DELETE", "PATCH"],
                help="Methods allowed in cross-origin requests."),
    cfg.ListOpt("allow_headers", default=["Content-MD5", "X-Image-Meta-Checksum",
                                          "X-Storage-Token", "Accept-Encoding",
                                          "X-Auth-Token", "X-Identity-Status", "X-Roles",
                                          "X-Service-Catalog", "X-User-Id", "X-Tenant-Id",
                                          "X-OpenStack-Request-ID"],
                help="Request headers allowed in cross-origin requests (besides the "
                     "CORS-safelisted ones, Content-Type included)."),
]

# oslo.middleware's healthcheck options; the defaults are what Glance's paste
# pipeline gives it (a disable file), with the file under state_path
healthcheck_opts: list[cfg.Opt] = [
    cfg.ListOpt("backends", default=["disable_by_file"],
                help="Checks behind GET /healthcheck: disable_by_file, or none (empty). "
                     "oslo.middleware's other backends are ignored (with a warning)."),
    cfg.StrOpt("disable_by_file_path", default="$state_path/healthcheck_disable",
               help="While this file exists, /healthcheck answers 503 DISABLED BY FILE "
                    "(the API itself keeps serving): touch it to drain the node from a "
                    "load balancer before maintenance, remove it to bring it back."),
]

task_opts: list[cfg.Opt] = [
    cfg.IntOpt("task_time_to_live", default=48, min=0,
               help="Hours a finished task stays visible."),
    cfg.IntOpt("max_workers", default=4, min=1, help="Concurrent tasks per process."),
    cfg.FloatOpt("download_timeout", default=60.0, min=0.1,
                 help="Seconds a web-download may stall before it fails."),
    cfg.FloatOpt("download_deadline", default=21600.0, min=0.0,
                 help="Seconds a whole web-download may take (0: no limit). A source that "
                      "sends a little data before every download_timeout would otherwise "
                      "hold one of the max_workers task slots for as long as it likes. "
                      "The default, 6 hours, is ~200 GB at 10 MB/s."),
    cfg.FloatOpt("claim_timeout", default=30.0, min=1.0,
                 help="Seconds a process's claim on a running task lasts without renewal "
                      "(renewed every third of it). A task whose process died is failed "
                      "(or, if it had not started, run again) once its claim runs out, "
                      "or at once by a process of the same machine (its lock in "
                      "$state_path/processes is free)."),
]

import_filtering_opts: list[cfg.Opt] = [
    glance_list_opt("allowed_schemes", default=["http", "https"],
                    item_type=cfg.types.String(quotes=True),
                    help="web-download: URI schemes allowed (empty: see disallowed_schemes)."),
    glance_list_opt("disallowed_schemes", default=[], item_type=cfg.types.String(quotes=True),
                    help="web-download: URI schemes refused when allowed_schemes is empty."),
    glance_list_opt("allowed_hosts", default=[], item_type=cfg.types.HostAddress(),
                    help="web-download: hosts allowed (empty: see disallowed_hosts)."),
    glance_list_opt("disallowed_hosts", default=[], item_type=cfg.types.HostAddress(),
                    help="web-download: hosts refused when allowed_hosts is empty."),
    glance_list_opt("allowed_ports", default=[80, 443],
                    item_type=cfg.types.Integer(min=1, max=65535),
                    help="web-download: ports allowed (empty: see disallowed_ports)."),
    glance_list_opt("disallowed_ports", default=[],
                    item_type=cfg.types.Integer(min=1, max=65535),
                    help="web-download: ports refused when allowed_ports is empty."),
]

image_format_opts: list[cfg.Opt] = [
    cfg.BoolOpt("require_image_format_match", default=True,
                help="Inspect the content of uploads and imports and require that it "
                     "matches the image's disk_format; a mismatch fails the upload (415) "
                     "or the import. Disabled, a mismatch is only logged (and the image "
                     "gets no virtual_size). Safety checks (a qcow2 backing file, ...) "
                     "refuse the data either way."),
    cfg.ListOpt("gpt_safety_checks_nonfatal", default=[],
                help="Safety checks of GPT content (disk_format gpt, or detected as "
                     "gpt) that only log when they fail: 'mbr' and/or 'gptmbr'. Use with "
                     "caution."),
]

GROUPS: dict[str | None, list[cfg.Opt]] = {
    None: default_opts,
    "glimpse": identity_opts,
    "database": database_opts,
    "glance_store": store_opts,
    "oslo_messaging_notifications": notification_opts,
    "oslo_messaging_rabbit": rabbit_opts,
    "outbox": outbox_opts,
    "oslo_middleware": middleware_opts,
    "cors": cors_opts,
    "healthcheck": healthcheck_opts,
    "task": task_opts,
    "import_filtering_opts": import_filtering_opts,
    "image_format": image_format_opts,
}

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size(text: str, option: str = "user_storage_quota") -> int:
    """``"10GB"`` -> bytes. Raises ConfigError naming ``option`` when malformed."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?B?)\s*", text.upper())
    if not match:
        raise ConfigError(f"Invalid value for {option}: {text!r} (expected e.g. 0, 500MB, 10GB)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def register(conf: cfg.ConfigOpts) -> None:
    """Register every option group on ``conf`` (idempotent)."""
    for group, opts in GROUPS.items():
        for opt in opts:
            with contextlib.suppress(cfg.DuplicateOptError):
                conf.register_opt(opt, group=group)


def load(argv: Sequence[str] = (), *, conf: cfg.ConfigOpts | None = None) -> cfg.ConfigOpts:
    """Parse ``argv`` (``--config-file F`` repeatable) into a validated ConfigOpts.

    Raises ConfigError with a message naming the bad option; never returns a
    half-valid configuration.
    """
    conf = conf or cfg.ConfigOpts()
    register(conf)
    try:
        conf(list(argv), project="glimpse", default_config_files=[])
        _validate(conf)
    except cfg.ConfigFileValueError as exc:
        raise ConfigError(f"Invalid configuration: {exc}") from exc
    except (cfg.Error, ValueError) as exc:
        raise ConfigError(f"Invalid configuration: {exc}") from exc
    return conf


def _validate(conf: cfg.ConfigOpts) -> None:
    # Touch every option so that type errors surface now, not mid-request.
    for group, opts in GROUPS.items():
        section = conf if group is None else conf[group]
        for opt in opts:
            try:
                getattr(section, opt.dest)
            except (cfg.ConfigFileValueError, ValueError) as exc:
                where = f"[{group or 'DEFAULT'}] {opt.name}"
                # oslo.config says "Value for option X from LocationInfo(...) is not
                # valid: REASON"; keep the reason and name the file plainly.
                reason = str(exc).rsplit(" is not valid: ", 1)[-1]
                source = re.search(r"detail='([^']+)'", str(exc))
                if source:
                    where += f" (in {source.group(1)})"
                raise ConfigError(f"Invalid value for {where}: {reason}") from exc
    parse_size(conf.user_storage_quota, "[DEFAULT] user_storage_quota")
    _check_public_endpoint(conf.public_endpoint)
    import hashlib

    if conf.hashing_algorithm not in hashlib.algorithms_available:
        raise ConfigError(f"Invalid value for [DEFAULT] hashing_algorithm: "
                          f"{conf.hashing_algorithm!r} is not a hashlib algorithm")
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        path = getattr(conf.oslo_messaging_rabbit, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"Invalid value for [oslo_messaging_rabbit] {name}: "
                              f"{path!r} cannot be read")
    known = {"noop", "log", "messaging", "messagingv2"}
    for name in conf.oslo_messaging_notifications.driver:
        if name not in known:
            raise ConfigError(
                f"Invalid value for [oslo_messaging_notifications] driver: unknown driver "
                f"{name!r} (known: log, messaging, messagingv2, noop)")


def _check_public_endpoint(value: str | None) -> None:
    if not value:
        return
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
            or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"Invalid value for [DEFAULT] public_endpoint: {value!r} "
                          f"(expected an http:// or https:// URL such as "
                          f"https://image.example.com or https://cloud.example.com/image)")


def list_opts() -> Iterable[tuple[str | None, list[cfg.Opt]]]:
    """Entry point for ``oslo-config-generator`` (namespace ``glimpse``)."""
    return [(group or "DEFAULT", opts) for group, opts in GROUPS.items()]
