"""What an image's data must be, checked as Glance checks it when data is stored
(an upload or an import): oslo.utils' format inspector reads every chunk on its
way to the store, and at the end of the stream the content decides.

For ``container_format`` ``bare`` only (Glance 33's ``ImageProxy.set_data``):

- the content's format is the one inspector that matched (ISO with a GPT boot
  record counts as ISO; when none matched: raw);
- it equals ``disk_format``: the image gets that format's ``virtual_size``;
- raw content under a ``disk_format`` no inspector knows (ami, ari, aki,
  ploop): accepted, no virtual size;
- ``disk_format`` raw holding a richer format: accepted, ``virtual_size`` is
  the byte count (it is used as a raw disk);
- anything else is a mismatch: refused with :class:`InvalidImageData` while
  ``[image_format] require_image_format_match`` (default), else only logged;
- the matched format's safety checks (a qcow2 backing or data file, VMDK
  extents, ...) must pass: else refused whatever that option says. GPT checks
  named in ``gpt_safety_checks_nonfatal`` only log, and the MBR check never
  refuses an aki/ari (kernels may carry an invalid one on purpose).

The verdict comes after the last chunk, inside the iteration the store is
consuming, so a refused stream fails the store's write and leaves nothing
stored. Like Glance, the transfer is never cut short for a mismatch. Inspection
costs ~0.03 s of CPU per GiB (in the thread that feeds the store).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from oslo_utils.imageutils import format_inspector

from glimpse.domain.image import Image
from glimpse.exceptions import InvalidImageData

MAX_VIRTUAL_SIZE = 2**63 - 1        # the largest value of the virtual_size column

LOG = logging.getLogger(__name__)

_Chunk = TypeVar("_Chunk")
# Formats that may carry an intentionally invalid MBR (kernel and ramdisk images).
_MBR_TOLERANT = frozenset({"aki", "ari"})


@dataclass(frozen=True)
class FormatRules:
    """``[image_format]``: ``require_match`` (require_image_format_match) and the
    GPT safety checks that only log (gpt_safety_checks_nonfatal)."""

    require_match: bool = True
    gpt_nonfatal: frozenset[str] = frozenset()

    @classmethod
    def from_conf(cls, conf: Any) -> FormatRules:
        group = conf.image_format
        return cls(require_match=group.require_image_format_match,
                   gpt_nonfatal=frozenset(group.gpt_safety_checks_nonfatal))


class ContentCheck:
    """Checks the data of one image as it streams (see the module docstring).

    ``wrap(chunks)`` yields the chunks unchanged (the same objects) and raises
    :class:`InvalidImageData` after the last one when the data is refused;
    ``virtual_size`` is set once the iteration has ended. Used by one thread.
    """

    def __init__(self, disk_format: str | None, container_format: str | None,
                 rules: FormatRules) -> None:
        self.disk_format = disk_format
        self.enabled = container_format == "bare"
        self.rules = rules
        self.virtual_size: int | None = None

    @classmethod
    def for_image(cls, image: Image, conf: Any) -> ContentCheck:
        """The check of ``image``'s data under the configured ``[image_format]`` rules."""
        return cls(image.disk_format, image.container_format, FormatRules.from_conf(conf))

    def wrap(self, chunks: Iterator[_Chunk]) -> Iterator[_Chunk]:
        if not self.enabled:
            yield from chunks
            return
        # typed for a file, used (as Glance uses it) on an iterator: it calls next()
        # on it and passes each chunk on unchanged
        inspecting = format_inspector.InspectWrapper(cast(Any, chunks))
        yield from cast(Iterator[_Chunk], inspecting)
        self.virtual_size = self.verdict(inspecting)

    def verdict(self, inspected: Any) -> int | None:
        """The virtual size the content gives (None: unknown), or InvalidImageData.
        ``inspected``: an InspectWrapper that has read the whole stream."""
        disk_format = self.disk_format
        inspector = None
        try:
            matched = {str(found): found for found in inspected.formats or ()}
            # a bootable ISO may have a GPT in front; any other pair of matches is
            # refused (``format`` raises ImageFormatError)
            iso_with_gpt = matched.keys() == {"iso", "gpt"}
            inspector = matched["iso"] if iso_with_gpt else inspected.format
            content = str(inspector)
            size: int | None = None
            if content == disk_format:
                size = inspector.virtual_size
            elif disk_format == "raw":
                LOG.warning("Image data claims disk_format raw but is %s", content)
                size = inspector.actual_size
            elif not (content == "raw" and disk_format not in format_inspector.ALL_FORMATS):
                raise format_inspector.ImageFormatError(
                    f"Image disk_format {disk_format} does not match stream data {content}")
            if size is not None and not 0 <= size <= MAX_VIRTUAL_SIZE:
                # a header's 64-bit field; no disk is that large, nor fits the column
                raise format_inspector.ImageFormatError(
                    f"Image virtual size {size} declared by its {content} header is out "
                    "of range")
            inspector.safety_check()
        except format_inspector.ImageFormatError as error:
            if self.rules.require_match:
                raise InvalidImageData(str(error)) from None
            LOG.warning("Image format %s did not match (%s); virtual size unknown",
                        disk_format, error)
            return None
        except format_inspector.SafetyCheckFailed as error:
            fatal = set(error.failures) - self.rules.gpt_nonfatal
            if disk_format in _MBR_TOLERANT:
                fatal.discard("mbr")
            if inspector is None or inspector.NAME != "gpt" or fatal:
                LOG.warning("Image data (%s) failed safety checks: %s", inspector, error)
                raise InvalidImageData("Image failed safety checks") from None
            LOG.warning("Non-fatal %s", error)
        except Exception:
            LOG.exception("Unable to determine the format of the image data")
            if self.rules.require_match:
                raise InvalidImageData("Image format inspection failed") from None
            return None
        return size or None
