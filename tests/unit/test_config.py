"""Configuration: the generated sample is current, unknown options are ignored,
bad values stop ``glimpse-api`` with exit status 2 and a message naming the option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glimpse import config
from glimpse.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "glimpse-api.conf.sample"


def _generator() -> str:
    candidate = Path(sys.executable).parent / "oslo-config-generator"
    return str(candidate) if candidate.exists() else "oslo-config-generator"


def test_checked_in_sample_is_current(tmp_path: Path) -> None:
    fresh = tmp_path / "glimpse-api.conf.sample"
    subprocess.run([_generator(), "--config-file",
                    str(ROOT / "etc" / "glimpse-config-generator.conf"),
                    "--output-file", str(fresh)], cwd=ROOT, check=True,
                   capture_output=True)
    assert fresh.read_text() == SAMPLE.read_text(), (
        "etc/glimpse-api.conf.sample is stale: run scripts/generate-config.sh and commit it")


def test_sample_names_every_option() -> None:
    text = SAMPLE.read_text()
    for group, opts in config.list_opts():
        assert f"[{group}]" in text
        for opt in opts:
            assert f"#{opt.dest} = " in text or f"#{opt.dest} =\n" in text, opt.dest


def test_the_sample_itself_loads(tmp_path: Path) -> None:
    conf = config.load(["--config-file", str(SAMPLE)])
    assert conf.bind_port == 9292
    assert conf.database.connection.startswith("sqlite:///")


def test_unknown_options_and_sections_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "glance-api.conf"
    path.write_text(
        "[DEFAULT]\nbind_port = 9393\nenabled_backends = fast:file\nshow_image_direct_url = true\n"
        "not_an_option_anywhere = 5\n"
        "[paste_deploy]\nflavor = keystone\n"
        "[glance_store]\nfilesystem_store_datadir = /srv/images\nrbd_store_pool = images\n"
        "[fast]\nfilesystem_store_datadir = /srv/fast\n")
    conf = config.load(["--config-file", str(path)])
    assert conf.bind_port == 9393
    assert conf.glance_store.filesystem_store_datadir == "/srv/images"


def test_later_config_files_win(tmp_path: Path) -> None:
    first = tmp_path / "a.conf"
    first.write_text("[DEFAULT]\nbind_port = 9001\nworkers = 3\n")
    second = tmp_path / "b.conf"
    second.write_text("[DEFAULT]\nbind_port = 9002\n")
    conf = config.load(["--config-file", str(first), "--config-file", str(second)])
    assert (conf.bind_port, conf.workers) == (9002, 3)


def test_list_options_take_glances_bracketed_and_quoted_forms(tmp_path: Path) -> None:
    path = tmp_path / "glimpse-api.conf"
    path.write_text("[DEFAULT]\nenabled_import_methods = [glance-direct,'web-download']\n"
                    "[import_filtering_opts]\nallowed_hosts = [127.0.0.1, images.example]\n"
                    "allowed_ports = [8000]\n")
    conf = config.load(["--config-file", str(path)])
    assert conf.enabled_import_methods == ["glance-direct", "web-download"]
    assert conf.import_filtering_opts.allowed_hosts == ["127.0.0.1", "images.example"]
    assert conf.import_filtering_opts.allowed_ports == [8000]
    # and oslo.config's usual form, without brackets
    path.write_text("[DEFAULT]\nenabled_import_methods = web-download\n"
                    "[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports =\n")
    conf = config.load(["--config-file", str(path)])
    assert conf.enabled_import_methods == ["web-download"]
    assert conf.import_filtering_opts.allowed_hosts == ["127.0.0.1"]
    assert conf.import_filtering_opts.allowed_ports == []


def test_load_raises_config_error_naming_the_option(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[outbox]\nbatch_size = lots\n")
    with pytest.raises(ConfigError, match=r"\[outbox\] batch_size"):
        config.load(["--config-file", str(path)])


@pytest.mark.parametrize(("section", "line", "named"), [
    ("DEFAULT", "bind_port = abc", "[DEFAULT] bind_port"),
    ("DEFAULT", "bind_port = 70000", "[DEFAULT] bind_port"),
    ("DEFAULT", "workers = 0", "[DEFAULT] workers"),
    ("DEFAULT", "worker_threads = 0", "[DEFAULT] worker_threads"),
    ("DEFAULT", "worker_threads = many", "[DEFAULT] worker_threads"),
    ("DEFAULT", "user_storage_quota = 12XB", "[DEFAULT] user_storage_quota"),
    ("DEFAULT", "debug = maybe", "[DEFAULT] debug"),
    ("DEFAULT", "hashing_algorithm = crc99", "[DEFAULT] hashing_algorithm"),
    ("DEFAULT", "auth_strategy = magic", "auth_strategy"),
    ("oslo_messaging_notifications", "driver = pigeon",
     "[oslo_messaging_notifications] driver"),
    ("database", "max_pool_size = 0", "[database] max_pool_size"),
    ("DEFAULT", "public_endpoint = image.example.com", "[DEFAULT] public_endpoint"),
    ("DEFAULT", "public_endpoint = ftp://image.example.com", "[DEFAULT] public_endpoint"),
    ("DEFAULT", "public_endpoint = https://h:99999", "[DEFAULT] public_endpoint"),
    ("DEFAULT", "public_endpoint = https://h/image?x=1", "[DEFAULT] public_endpoint"),
    ("oslo_middleware", "enable_proxy_headers_parsing = perhaps",
     "[oslo_middleware] enable_proxy_headers_parsing"),
    ("oslo_messaging_rabbit", "ssl_ca_file = /nonexistent/ca.pem",
     "[oslo_messaging_rabbit] ssl_ca_file"),
    ("DEFAULT", "enabled_import_methods = glance-direct,bogus-method",
     "[DEFAULT] enabled_import_methods"),
    ("import_filtering_opts", "allowed_ports = 80,70000",
     "[import_filtering_opts] allowed_ports"),
])
def test_invalid_value_stops_start_up(tmp_path: Path, section: str, line: str,
                                      named: str) -> None:
    path = tmp_path / "glimpse-api.conf"
    path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\nbind_port = 1\n"
                    f"[{section}]\n{line}\n")
    if section == "DEFAULT":   # the line must be the only value of its option
        path.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n{line}\n")
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", "--config-file", str(path)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists(), "nothing is created before the config is valid"


def test_missing_config_file_stops_start_up(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", "--config-file",
                             str(tmp_path / "missing.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "missing.conf" in result.stderr


def test_worker_threads_default_and_value(tmp_path: Path) -> None:
    """[DEFAULT] worker_threads bounds each request thread pool of a worker (issue 6)."""
    assert config.load([]).worker_threads == 2
    path = tmp_path / "glimpse-api.conf"
    path.write_text("[DEFAULT]\nworker_threads = 8\n")
    assert config.load(["--config-file", str(path)]).worker_threads == 8


def test_public_endpoint_accepts_urls_with_a_path(tmp_path: Path) -> None:
    path = tmp_path / "glimpse-api.conf"
    path.write_text("[DEFAULT]\npublic_endpoint = https://cloud.example.com:8443/image/\n"
                    "[oslo_middleware]\nenable_proxy_headers_parsing = true\n")
    conf = config.load(["--config-file", str(path)])
    assert conf.public_endpoint == "https://cloud.example.com:8443/image/"
    assert conf.oslo_middleware.enable_proxy_headers_parsing is True
    assert config.load([]).oslo_middleware.enable_proxy_headers_parsing is False
