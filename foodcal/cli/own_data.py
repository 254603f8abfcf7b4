"""The CLI's commands for a person's own data: `today` (day totals), `export` (JSON lines) and
`delete`. foodcal/cli/main.py adds them to its parser and runs them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from foodcal.v1 import gateway_pb2


def local_zone() -> str:
    """This machine's IANA time zone: TZ, else what /etc/localtime links to, else UTC."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        return name
    target = str(Path("/etc/localtime").resolve())
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "UTC"


def add_commands(commands) -> None:
    today = commands.add_parser("today", help="today's totals in your time zone (--from/--to: several days)")
    today.add_argument("--from", dest="from_date", default="", metavar="YYYY-MM-DD", help="default: today")
    today.add_argument("--to", dest="to_date", default="", metavar="YYYY-MM-DD", help="default: --from")
    today.add_argument("--tz", default=local_zone(), help="an IANA time zone (default: this machine's)")
    today.add_argument("--owner", default="", help="admins: one client's days (an `owner` from export)")
    commands.add_parser("export", help="every sample of yours, one JSON object a line: export > meals.jsonl")
    delete = commands.add_parser("delete", help="delete a sample, and its photo when no other sample has it")
    delete.add_argument("sample_id")


def _days(response: gateway_pb2.GetDailyTotalsResponse) -> str:
    lines = [f"{'day':<10}  {'plates':>6}  {'kcal':>6}  {'proteins g':>10}  {'fats g':>6}  {'carbs g':>7}"]

    def row(name: str, plates: int, n) -> str:
        return (
            f"{name:<10}  {plates:>6}  {n.calories_kcal:>6.0f}  {n.proteins_g:>10.1f}  "
            f"{n.fats_g:>6.1f}  {n.carbs_g:>7.1f}"
        )

    lines += [row(day.date, day.plates, day.nutrition) for day in response.days]
    if len(response.days) > 1:
        lines.append(row("total", response.plates, response.total))
    lines.append(f"(days in {response.time_zone}; a corrected plate counts its correction)")
    return "\n".join(lines)


def run(args, stub, metadata, show) -> int | None:
    """The command's exit code; None when it is not one of these."""
    if args.command == "today":
        request = gateway_pb2.GetDailyTotalsRequest(
            from_date=args.from_date, to_date=args.to_date, time_zone=args.tz, owner=args.owner
        )
        response = stub.GetDailyTotals(request, metadata=metadata, timeout=30)
        show(response) if args.json else print(_days(response))
        return 0
    if args.command == "export":
        for record in stub.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=metadata):
            print(
                json.dumps(MessageToDict(record, preserving_proto_field_name=True)),
            )
        sys.stdout.flush()
        return 0
    if args.command == "delete":
        request = gateway_pb2.DeleteSampleRequest(sample_id=args.sample_id)
        response = stub.DeleteSample(request, metadata=metadata, timeout=30)
        if args.json:
            show(response)
        else:
            photo = "deleted" if response.photo_deleted else "kept (another sample has it)"
            print(f"sample {response.sample_id} deleted, its photo {photo}, "
                  f"{response.label_cache_entries_deleted} cached labels deleted")  # fmt: skip
        return 0
    return None
