"""The upload service: the texts of failed uploads' ``image.upload`` ERROR."""

from __future__ import annotations

from glimpse.exceptions import ClientDisconnected, Gone, QuotaExceeded, StorageFull
from glimpse.services.image_upload import upload_error_text


def test_upload_error_texts_name_the_image_and_the_cause() -> None:
    iid = "1b0c5f0e-0000-4000-8000-000000000001"
    assert upload_error_text(iid, QuotaExceeded("over quota")) == (
        f"Failed to upload image data for image {iid}: over quota")
    assert upload_error_text(iid, ClientDisconnected("client left")) == (
        f"Failed to upload image data for image {iid}: client left")
    assert upload_error_text(iid, StorageFull("Image storage media is full: disk")) == (
        "Image storage media is full: disk")
    assert upload_error_text(iid, Gone("deleted")).startswith(
        f"Image {iid} could not be found after upload. The image may have been deleted "
        "during the upload: ")
    assert upload_error_text(iid, RuntimeError("boom")).endswith(": boom")
