"""Notifications: catalogue, pure payload builders, envelope, outbox recorder, relay, drivers.

Flow: a service changes state and, in the same database transaction, calls
``Notifier.record`` -> one outbox row per configured driver. After commit the
relay (``relay.py``) reads pending rows in order and hands them to the
drivers (``drivers/``), marking each delivered only once its driver confirmed.
"""
