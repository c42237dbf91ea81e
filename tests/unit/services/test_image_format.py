"""The content check of image data: Glance's rules over oslo.utils' format
inspector, fed chunk by chunk as the store would consume them."""

from __future__ import annotations

import logging
import struct

import pytest

from glimpse.exceptions import InvalidImageData
from glimpse.services.image_format import ContentCheck, FormatRules
from tests.image_bytes import qcow2, random_raw

GIB = 1 << 30
GLANCE_DEFAULTS = FormatRules()


def run(data: bytes, disk_format: str | None, container_format: str = "bare",
        rules: FormatRules = GLANCE_DEFAULTS, chunk: int = 4096) -> ContentCheck:
    """Stream ``data`` through a check in ``chunk``-byte memoryviews; the chunks
    come out as the very objects that went in, in order."""
    check = ContentCheck(disk_format, container_format, rules)
    view = memoryview(data)
    chunks = [view[i:i + chunk] for i in range(0, len(data), chunk)]
    out = list(check.wrap(iter(chunks)))
    assert len(out) == len(chunks) and all(a is b for a, b in zip(out, chunks, strict=True))
    return check


def mbr_disk(boot_flag: int = 0x00) -> bytes:
    """512 bytes of an MBR with one partition (flag ``boot_flag``), then zeros."""
    data = bytearray(64 * 1024)
    struct.pack_into("<B3BB3BII", data, 446, boot_flag, 0, 2, 0, 0x83, 0, 0, 0, 2048, 4096)
    data[510:512] = b"\x55\xaa"
    return bytes(data)


def test_raw_data_gets_its_size_as_virtual_size() -> None:
    data = random_raw(300_000)
    assert run(data, "raw").virtual_size == len(data)


def test_qcow2_data_gets_the_virtual_size_its_header_declares() -> None:
    assert run(qcow2(20 * GIB), "qcow2", chunk=100).virtual_size == 20 * GIB


@pytest.mark.parametrize("size", [2**63, 2**64 - 1])
def test_a_virtual_size_beyond_any_disk_is_refused_or_unknown(
        size: int, caplog: pytest.LogCaptureFixture) -> None:
    """A 64-bit header field no database column holds: refused like a mismatch,
    or (when no match is required) stored without a virtual size."""
    with pytest.raises(InvalidImageData, match=f"virtual size {size} declared by its qcow2 "
                                                "header is out of range"):
        run(qcow2(size), "qcow2")
    with caplog.at_level(logging.WARNING):
        assert run(qcow2(size), "qcow2", rules=FormatRules(require_match=False)
                   ).virtual_size is None
    assert run(qcow2(2**63 - 512), "qcow2").virtual_size == 2**63 - 512


def test_a_qcow2_stored_as_raw_is_taken_as_raw_bytes() -> None:
    data = qcow2(20 * GIB)
    assert run(data, "raw").virtual_size == len(data)


def test_data_that_is_not_its_disk_format_is_refused() -> None:
    with pytest.raises(InvalidImageData, match="disk_format qcow2 does not match stream "
                                                "data raw"):
        run(random_raw(10_000), "qcow2")
    with pytest.raises(InvalidImageData, match="disk_format vmdk does not match stream "
                                                "data qcow2"):
        run(qcow2(GIB), "vmdk")


def test_a_mismatch_is_only_logged_when_no_match_is_required(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check = run(random_raw(10_000), "qcow2", rules=FormatRules(require_match=False))
    assert check.virtual_size is None
    assert "did not match" in caplog.text


def test_formats_without_an_inspector_accept_raw_data() -> None:
    for disk_format in ("ami", "aki", "ari", "ploop"):
        assert run(random_raw(5000), disk_format).virtual_size is None


@pytest.mark.parametrize("rules", [GLANCE_DEFAULTS, FormatRules(require_match=False)])
@pytest.mark.parametrize("image", [qcow2(GIB, backing_file=True), qcow2(GIB, data_file=True)],
                         ids=["backing-file", "data-file"])
def test_unsafe_qcow2_is_refused_whatever_the_match_rule(image: bytes,
                                                         rules: FormatRules) -> None:
    with pytest.raises(InvalidImageData, match="Image failed safety checks"):
        run(image, "qcow2", rules=rules)


def test_only_bare_containers_are_inspected() -> None:
    check = run(qcow2(GIB, backing_file=True), "raw", container_format="ovf")
    assert check.virtual_size is None
    assert run(random_raw(1000), "qcow2", container_format="docker").virtual_size is None


def test_an_mbr_disk_declared_raw_is_accepted_with_valid_partitions() -> None:
    data = mbr_disk()
    assert run(data, "raw").virtual_size == len(data)


def test_gpt_checks_refuse_a_broken_mbr_unless_told_they_are_nonfatal() -> None:
    broken = mbr_disk(boot_flag=0x42)             # neither 0x00 nor 0x80
    with pytest.raises(InvalidImageData, match="safety checks"):
        run(broken, "raw")
    nonfatal = FormatRules(gpt_nonfatal=frozenset({"mbr"}))
    assert run(broken, "raw", rules=nonfatal).virtual_size == len(broken)
