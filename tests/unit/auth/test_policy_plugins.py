"""auth.policy_plugins: oslo.policy's rule-check plugins load only when a rule uses them."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(code: str) -> object:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_policy_http_check_plugin_loads_only_when_a_rule_uses_it() -> None:
    code = """
import json, sys
from oslo_policy import _parser
from glimpse.auth import policy_plugins
policy_plugins.install()
plain = _parser.parse_rule("role:admin or project_id:%(owner)s")
before = "requests" in sys.modules
http = _parser.parse_rule("role:admin or https://policy.example/%(target)s")
print(json.dumps([type(plain).__name__, before, type(http.rules[1]).__name__,
                  "requests" in sys.modules]))
"""
    # plain rules parse as before without importing requests; an https: rule
    # still gets oslo.policy's HttpsCheck (and only then imports requests)
    assert _run(code) == ["OrCheck", False, "HttpsCheck", True]


def test_a_worker_imports_and_enforces_the_defaults_without_requests() -> None:
    # The worker's own import path (the policy defaults are parsed when
    # glimpse.auth.policy is imported), then a real decision with the defaults.
    code = """
import json, sys
from glimpse.worker import preload
preload()
from glimpse import config
from glimpse.auth.context import RequestContext
from glimpse.auth.policy import enforcer_for
conf = config.load([])
ctx = RequestContext(project_id="p", user_id="u", roles=frozenset({"member", "reader"}))
allowed = enforcer_for(conf).check(ctx, "get_images", {"project_id": "p"})
print(json.dumps([allowed, "requests" in sys.modules]))
"""
    assert _run(code) == [True, False]
