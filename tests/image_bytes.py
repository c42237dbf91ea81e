"""Image data for tests: random raw bytes, and headers of other formats.

Uploads and imports are inspected (``glimpse.services.image_format``): random
bytes with ``55 AA`` at offset 510 look like an MBR, so as ``raw`` data they
would, once in 65,536 draws, be refused by the GPT safety check (as in
Glance). ``random_raw`` never draws those two bytes.
"""

from __future__ import annotations

import os
import struct


def random_raw(size: int) -> bytes:
    """``size`` random bytes that no format inspector takes for anything but raw."""
    data = bytearray(os.urandom(size))
    if size >= 512:
        data[510:512] = b"\x00\x00"
    return bytes(data)


def qcow2(virtual_size: int, *, backing_file: bool = False, data_file: bool = False,
          version: int = 3, length: int = 65536) -> bytes:
    """A qcow2 image of ``length`` bytes whose header says ``virtual_size``: what
    the format inspector reads (magic, version, backing file offset, size,
    incompatible features), the rest zeros."""
    header = bytearray(length)
    struct.pack_into(">4sIQIIQ", header, 0, b"QFI\xfb", version,
                     512 if backing_file else 0, 8 if backing_file else 0, 16, virtual_size)
    if data_file:
        header[0x48 + 7] |= 0x04       # incompatible feature bit 2: external data file
    return bytes(header)
