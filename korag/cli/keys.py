"""`korag keys add --tenant T` / `list` / `revoke KEY_ID`: the service's API keys (korag.services.keys).

``korag.cli.build_parser`` registers them with ``add_commands(sub)``.
"""

from __future__ import annotations

import argparse
import sys

from korag.cli.common import EXIT_ERROR, print_json
from korag.rules import printable
from korag.services.keys import KeyRing
from korag.settings import Settings

NO_KEYS = ("no keys: a running `korag serve` that started with keys refuses every request (401) until one is added "
           "with `korag keys add --tenant T`; one started without keys runs open, on loopback only")


def cmd_keys_add(args: argparse.Namespace, settings: Settings) -> int:
    ring = KeyRing.from_settings(settings)
    key_id, key = ring.add(args.tenant)
    if args.json:
        print_json({"id": key_id, "tenant": args.tenant, "key": key})
    else:
        print(key)
        role = "admin key (any tenant, via X-Korag-Tenant)" if args.tenant == "*" else f"tenant {printable(args.tenant)}"
        print(f"key {key_id} for {role}; store it now: it is not shown again (only its hash is kept in "
              f"{ring.path})", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = KeyRing.from_settings(settings).list()
    if args.json:
        print_json({"keys": [k.to_json() for k in keys]})
        return 0
    if not keys:
        print(NO_KEYS)
    for k in keys:
        created = k.created_at if k.created_at is not None else "KORAG_API_KEYS"
        print(f"{k.id:<16} {created:<20} {printable(k.tenant)}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    ring = KeyRing.from_settings(settings)
    revoked = ring.revoke(args.key_id)
    if args.json:
        print_json({"id": args.key_id, "revoked": revoked})
    elif revoked:
        print(f"revoked {args.key_id}")
    if not revoked:
        print(f"korag keys revoke: no key {printable(args.key_id)} (see `korag keys list`)", file=sys.stderr)
        return EXIT_ERROR
    if not ring.list():
        print(f"korag keys revoke: that was the last key. {NO_KEYS}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys of `korag serve`: add, list, revoke")
    actions = keys.add_subparsers(dest="keys", required=True)

    p = actions.add_parser("add", help="make a key for a tenant and print it once (tenant * = admin)")
    p.add_argument("--tenant", required=True, help="the tenant whose documents the key reaches; * for an admin key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_add)

    p = actions.add_parser("list", help="key ids, tenants and creation times (never the keys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)

    p = actions.add_parser("revoke", help="remove a key; requests with it get 401 from then on")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_revoke)
