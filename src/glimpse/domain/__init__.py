"""Entities and state machines. Pure: no I/O, no clock reads except via arguments."""
