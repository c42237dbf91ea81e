"""The version document: Glance 33's list, links under the given base URL."""

from __future__ import annotations

from glimpse.api.versions import version_list


def test_version_list_is_glances() -> None:
    doc = version_list("http://h:9292")
    ids = [v["id"] for v in doc["versions"]]
    assert ids == ["v2.18", "v2.17", "v2.16", "v2.15", "v2.14", "v2.9", "v2.7", "v2.6",
                   "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"]
    assert [v["status"] for v in doc["versions"]] == ["CURRENT"] + ["SUPPORTED"] * 13
    assert all(list(v) == ["id", "status", "links"] for v in doc["versions"])


def test_links_point_at_v2_under_the_base_url() -> None:
    for base in ("https://images.example.org", "https://images.example.org/"):
        links = {v["links"][0]["href"] for v in version_list(base)["versions"]}
        assert links == {"https://images.example.org/v2/"}
    prefixed = version_list("http://proxy/image")["versions"][0]["links"]
    assert prefixed == [{"rel": "self", "href": "http://proxy/image/v2/"}]
