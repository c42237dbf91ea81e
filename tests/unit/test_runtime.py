"""runtime wiring: oslo.policy's rule-check plugins load only when a rule uses them."""

from __future__ import annotations

import json
import subprocess
import sys


def test_policy_http_check_plugin_loads_only_when_a_rule_uses_it() -> None:
    code = """
import json, sys
from oslo_policy import _checks, _parser
from glimpse.runtime import _lazy_policy_rule_checks
_lazy_policy_rule_checks()
plain = _parser.parse_rule("role:admin or project_id:%(owner)s")
before = "requests" in sys.modules
http = _parser.parse_rule("role:admin or https://policy.example/%(target)s")
print(json.dumps([type(plain).__name__, before, type(http.rules[1]).__name__,
                  "requests" in sys.modules]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    # plain rules parse as before without importing requests; an https: rule
    # still gets oslo.policy's HttpsCheck (and only then imports requests)
    assert json.loads(result.stdout) == ["OrCheck", False, "HttpsCheck", True]
