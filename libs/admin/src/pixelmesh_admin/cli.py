"""`pixelmesh`: the operator CLI over pricing's gRPC admin API.

    pixelmesh keys create --plan pro --name ci [--account ACCT] [--images-per-minute N ...]
    pixelmesh keys list [--account ACCT]
    pixelmesh keys revoke KEY_ID
    pixelmesh accounts credit ACCT --tokens N [--reference REF] [--note TEXT]
    pixelmesh accounts balance ACCT
    pixelmesh ledger ACCT            (every movement of the balance, row by row)
    pixelmesh usage ACCT [--start YYYY-MM-DD] [--end YYYY-MM-DD]

Reads PRICING_ADDR (default 127.0.0.1:50052) and PRICING_ADMIN_TOKEN; `--json` prints
machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh_admin.client import AdminClient
from svckit.errors import from_rpc_error


def _json(message: Message) -> str:
    """Every field, defaults too: `"applied": false` says a credit was not applied."""
    return json.dumps(
        MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True), indent=2
    )


def _time(message: Message, field: str) -> str:
    if not message.HasField(field):
        return "-"
    return getattr(message, field).ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:.6f}".rstrip("0").rstrip(".")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _limits(args: argparse.Namespace) -> pb.KeyLimits:
    limits = pb.KeyLimits()
    for name in ("images_per_minute", "images_per_day", "max_concurrent"):
        value = getattr(args, name)
        if value is not None:
            setattr(limits, name, value)
    return limits


def run(args: argparse.Namespace, client: AdminClient) -> str:
    if args.group == "keys" and args.action == "create":
        created = client.create_key(plan=args.plan, name=args.name, account_id=args.account or "", limits=_limits(args))
        if args.json:
            return _json(created)
        return (
            f"created {created.api_key.id} on plan {created.api_key.plan} for account {created.api_key.account_id}\n"
            f"secret: {created.secret}\n(shown once: only its digest is stored)"
        )
    if args.group == "keys" and args.action == "list":
        listed = client.list_keys(args.account or "")
        if args.json:
            return _json(listed)
        return _table(
            ["id", "account", "plan", "name", "prefix", "created", "revoked"],
            [
                [k.id, k.account_id, k.plan, k.name, k.prefix + "...", _time(k, "create_time"), _time(k, "revoke_time")]
                for k in listed.api_keys
            ],
        )
    if args.group == "keys" and args.action == "revoke":
        revoked = client.revoke_key(args.key_id)
        return _json(revoked) if args.json else f"revoked {revoked.api_key.id} (account {revoked.api_key.account_id})"
    if args.group == "accounts" and args.action == "credit":
        credited = client.credit(args.account, args.tokens, reference=args.reference or "", note=args.note or "")
        if args.json:
            return _json(credited)
        state = "credited" if credited.applied else "not applied: this account already has a credit with this reference"
        balance = credited.balance
        return (
            f"{state}: {args.account} has {balance.available_tokens} tokens available, "
            f"{balance.reserved_tokens} reserved"
        )
    if args.group == "accounts" and args.action == "balance":
        held = client.balance(args.account)
        if args.json:
            return _json(held)
        return (
            f"{args.account}: {held.balance.available_tokens} tokens available, {held.balance.reserved_tokens} reserved"
        )
    if args.group == "ledger":
        ledger = client.ledger(args.account)
        if args.json:
            return _json(ledger)
        rows = [
            [
                e.id,
                _time(e, "create_time"),
                e.kind,
                e.reference,
                f"{e.amount_tokens:+d}",
                e.balance_after,
                e.charged.tokens if e.kind == "capture" else "",
                e.model,
                e.note,
            ]
            for e in ledger.entries
        ]
        body = _table(["id", "time", "kind", "reference", "amount", "balance", "charged", "model", "note"], rows)
        return (
            f"{body}\nbalance: {ledger.balance.available_tokens} available, {ledger.balance.reserved_tokens} reserved"
        )
    if args.group == "usage":
        usage = client.usage(args.account, args.start or "", args.end or "")
        if args.json:
            return _json(usage)
        rows = [
            [u.date, u.model, u.api_key_id, u.generations, u.images, u.cost.tokens, _usd(u.cost.usd_micros)]
            for u in usage.rows
        ]
        body = _table(["date", "model", "key", "generations", "images", "tokens", "usd"], rows)
        total = usage.total
        return (
            f"{body}\ntotal: {total.tokens} tokens, {_usd(total.usd_micros)} ({usage.start_date} .. {usage.end_date})"
        )
    raise AssertionError(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelmesh", description="pixelmesh operator CLI (pricing admin API)")
    p.add_argument(
        "--addr", default=os.environ.get("PRICING_ADDR", "127.0.0.1:50052"), help="pricing host:port (PRICING_ADDR)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    groups = p.add_subparsers(dest="group", required=True)

    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key (its secret is shown once)")
    create.add_argument("--plan", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--account", help="the owner (default: a new account)")
    for name in ("images-per-minute", "images-per-day", "max-concurrent"):
        create.add_argument(f"--{name}", type=int, help="override the plan's limit (0: none)")
    keys.add_parser("list", help="list keys").add_argument("--account")
    keys.add_parser("revoke", help="revoke a key at once").add_argument("key_id")

    accounts = groups.add_parser("accounts", help="balances").add_subparsers(dest="action", required=True)
    credit = accounts.add_parser("credit", help="add tokens to a balance")
    credit.add_argument("account")
    credit.add_argument("--tokens", type=int, required=True)
    credit.add_argument("--reference", help="the account's reference for this credit (a retried credit applies once)")
    credit.add_argument("--note")
    accounts.add_parser("balance", help="show a balance").add_argument("account")

    groups.add_parser("ledger", help="every movement of an account's balance").add_argument("account")
    usage = groups.add_parser("usage", help="spend per day, model and key")
    usage.add_argument("account")
    usage.add_argument("--start")
    usage.add_argument("--end")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    token = os.environ.get("PRICING_ADMIN_TOKEN", "")
    if not token:
        print("pixelmesh: set PRICING_ADMIN_TOKEN to the operator token of pricing", file=sys.stderr)
        return 2
    with AdminClient(args.addr, token) as client:
        try:
            print(run(args, client))
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            where = f" ({err.param})" if err.param else ""
            print(f"pixelmesh: {err.code.value}: {err.message}{where}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
