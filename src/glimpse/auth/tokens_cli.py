"""``glimpse-manage token create|list|revoke``: manage the token file of
``auth_strategy = token-file`` (``[glimpse] token_file``).

``token create --user U --project P --roles a,b`` prints the new token once
(it is stored only as a hash) plus its id; ``token list`` shows ids, users,
projects and roles (never hashes); ``token revoke ID`` removes one. A running
server notices changes within a second (or at once on SIGHUP).
``--json`` makes every command print one JSON document instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from glimpse.auth import token_file
from glimpse.exceptions import ConfigError, GlimpseError


def add_parser(sub: Any) -> None:
    """Register the ``token`` sub-commands on ``glimpse-manage``'s sub-parsers."""
    token = sub.add_parser("token", help="API tokens of auth_strategy=token-file")
    token.add_argument("--json", action="store_true", help="print JSON")
    actions = token.add_subparsers(dest="token_action", required=True)
    create = actions.add_parser("create", help="create a token (printed once)")
    create.add_argument("--user", required=True)
    create.add_argument("--project", required=True)
    create.add_argument("--roles", default="member,reader",
                        help="comma-separated roles (default: member,reader)")
    create.add_argument("--description", default="")
    actions.add_parser("list", help="list tokens (without secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")


def run(args: argparse.Namespace, conf: Any) -> int:
    """Execute a ``token`` command; returns the process exit status."""
    path = conf.glimpse.token_file
    as_json = bool(getattr(args, "json", False))
    try:
        if args.token_action == "create":
            roles = [r for r in args.roles.split(",") if r.strip()]
            token, entry = token_file.create_token(path, user=args.user, project=args.project,
                                                   roles=roles, description=args.description)
            if as_json:
                print(json.dumps({**entry.public(), "token": token}))
            else:
                print(f"id:      {entry.id}\nuser:    {entry.user}\nproject: {entry.project}\n"
                      f"roles:   {','.join(entry.roles)}\ntoken:   {token}\n"
                      "(the token is shown only now; it is stored as a hash)")
            return 0
        if args.token_action == "list":
            entries = token_file.read_entries(_path(path))
            if as_json:
                print(json.dumps([e.public() for e in entries]))
            else:
                print(f"{'ID':<14}{'USER':<20}{'PROJECT':<34}{'ROLES':<24}CREATED")
                for e in entries:
                    print(f"{e.id:<14}{e.user:<20}{e.project:<34}{','.join(e.roles):<24}"
                          f"{e.created_at}")
            return 0
        if args.token_action == "revoke":
            entry = token_file.revoke_token(path, args.token_id)
            print(json.dumps(entry.public()) if as_json else f"revoked {entry.id}")
            return 0
    except (GlimpseError, ConfigError) as exc:
        print(f"glimpse-manage token: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"glimpse-manage token: {exc}", file=sys.stderr)
        return 1
    return 2


def _path(path: str) -> Any:
    from pathlib import Path

    return Path(path)
