"""Glimpse: an OpenStack Image API v2 (Glance-compatible) image service."""

__version__ = "0.1.0"
