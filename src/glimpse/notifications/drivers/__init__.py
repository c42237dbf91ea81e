"""Notification drivers (contract section 2): ``log``, ``messaging``, ``messagingv2``.

``load_driver(name, conf)`` builds one by its configured name. ``noop`` is
not a driver: the recorder drops it, so it costs nothing and never reaches
the relay. Building a driver never touches the network.
"""

from __future__ import annotations

from typing import Any

from glimpse.exceptions import ConfigError
from glimpse.notifications.drivers.base import DeliveryError, Driver, OutboxEvent, Ticket

__all__ = ["DRIVER_NAMES", "DeliveryError", "Driver", "OutboxEvent", "Ticket", "load_driver"]

DRIVER_NAMES = ("log", "messaging", "messagingv2")


def load_driver(name: str, conf: Any) -> Driver:
    """The driver called ``name``; ConfigError for an unknown name or a bad transport URL."""
    if name == "log":
        from glimpse.notifications.drivers.log import LogDriver

        return LogDriver()
    if name in ("messaging", "messagingv2"):
        from glimpse.notifications.drivers.amqp import AmqpDriver

        return AmqpDriver.from_conf(conf, v2=(name == "messagingv2"))
    raise ConfigError(
        f"Invalid value for [oslo_messaging_notifications] driver: unknown driver {name!r} "
        f"(known: {', '.join(DRIVER_NAMES)}, noop)")
