"""A command-line client for people: `python -m foodcal.cli analyze photo.jpg`.

Prints a short summary of each answer; `--json` prints the full message, defaults included.

The token comes from FOODCAL_TOKEN (or the first of API_TOKENS); the address from
FOODCAL_ADDRESS (default 127.0.0.1:50051). A gateway serving TLS: `--tls` trusts the system's
certificate authorities, `--ca-file PATH` (or FOODCAL_CA_FILE) a certificate of your own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from foodcal.cli import own_data, quality_report
from foodcal.cli.summaries import summary
from foodcal.domain.nutrition import NUTRIENTS
from foodcal.rpc.grpc_server import message_size_options
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc


def _token() -> str:
    token = os.environ.get("FOODCAL_TOKEN") or os.environ.get("API_TOKENS", "").split(",")[0].strip()
    if not token:
        sys.exit("set FOODCAL_TOKEN to one of the gateway's API_TOKENS")
    return token


def _channel(args) -> grpc.Channel:
    options = message_size_options(12 * 1024 * 1024)
    if args.ca_file is None and not args.tls:
        return grpc.insecure_channel(args.address, options=options)
    roots = Path(args.ca_file).read_bytes() if args.ca_file is not None else None
    return grpc.secure_channel(args.address, grpc.ssl_channel_credentials(roots), options=options)


def _printer(as_json: bool):
    def show(message) -> None:
        if as_json:
            fields = MessageToDict(
                message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            print(json.dumps(fields, indent=2))
        else:
            print(summary(message))

    return show


def _item(text: str) -> common_pb2.FoodItem:
    """NAME:GRAMS:KCAL:PROTEINS:FATS:CARBS, e.g. "rice:150:195:4:0.5:42"."""
    name, *numbers = text.rsplit(":", 5)
    try:
        grams, *values = (float(n) for n in numbers)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: numbers expected after the name") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:GRAMS:KCAL:PROTEINS:FATS:CARBS")
    return common_pb2.FoodItem(
        name=name, grams=grams, nutrition=common_pb2.Nutrition(**dict(zip(NUTRIENTS, values, strict=True)))
    )


def _progress(epoch: common_pb2.EpochMetrics, width: int = 30) -> str:
    done = int(width * epoch.epoch / max(epoch.total_epochs, 1))
    bar = "#" * done + "-" * (width - done)
    return (
        f"[{bar}] Epoch {epoch.epoch}/{epoch.total_epochs} - Train Loss: {epoch.train_loss:.4f}, "
        f"Val Loss: {epoch.val_loss:.4f} (best {epoch.best_val_loss:.4f})"
    )


def watch(stub, run_id: str, metadata) -> int:
    outcome = None
    for response in stub.WatchTrainingRun(
        gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id=run_id), metadata=metadata
    ):
        event = response.event
        if event.HasField("epoch"):
            print(_progress(event.epoch), flush=True)
        else:
            outcome = event.outcome
    if outcome is None:
        return 1
    print(f"{common_pb2.TrainingRunStatus.Name(outcome.status)}: {outcome.message}")
    return 0 if outcome.status != common_pb2.TRAINING_RUN_STATUS_FAILED else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m foodcal.cli", description=__doc__)
    parser.add_argument("--address", default=os.environ.get("FOODCAL_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs")
    ca_help = "TLS, trusting this PEM certificate or CA (FOODCAL_CA_FILE)"
    ca_file = os.environ.get("FOODCAL_CA_FILE") or None
    parser.add_argument("--ca-file", type=Path, default=ca_file, help=ca_help)
    json_help = "print the full message as JSON, defaults included"
    parser.add_argument("--json", action="store_true", help=json_help)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="send a photo, print dish and nutrition")
    analyze.add_argument("photo", type=Path)
    analyze.add_argument("--note", default="", help='what the photo cannot show: "two slices, no cheese"')
    analyze.add_argument(
        "--angle", action="append", default=[], type=Path, help="another photo of the same plate (up to 3)"
    )
    analyze.add_argument("--meal", default="", help="a meal id of yours: plates with the same id form a meal")
    meal = commands.add_parser("meal", help="the plates of one meal and their sum")
    meal.add_argument("meal_id")
    commands.add_parser("stats", help="totals, training_data_samples, costs, served versions")
    samples = commands.add_parser("samples", help="the newest samples")
    samples.add_argument("--page-size", type=int, default=10)
    samples.add_argument("--page-token", default="")
    samples.add_argument(
        "--corrections",
        choices=["corrected", "flagged", "rejected"],
        help="only corrected samples, flagged corrections not yet reviewed, or rejected ones",
    )
    sample = commands.add_parser("sample", help="one sample")
    sample.add_argument("sample_id")
    correct = commands.add_parser(
        "correct", help="store a person's true values for a sample: totals, items, or both"
    )
    correct.add_argument("sample_id")
    for name in ("calories", "proteins", "fats", "carbs"):
        correct.add_argument(f"--{name}", type=float, help="with the other three totals")
    correct.add_argument(
        "--item",
        action="append",
        default=[],
        type=_item,
        metavar="NAME:GRAMS:KCAL:PROTEINS:FATS:CARBS",
        help="one item on the plate (repeat); items alone set the totals to their sum",
    )
    review = commands.add_parser(
        "review", help="admins: confirm or reject a correction (`samples --corrections flagged` finds them)"
    )
    review.add_argument("sample_id")
    review.add_argument("decision", choices=["confirm", "reject", "undo"])
    train = commands.add_parser("train", help="start a training run and watch it")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--learning-rate", type=float, default=0.001)
    train.add_argument("--no-watch", action="store_true")
    watch_parser = commands.add_parser("watch", help="follow a training run with a progress bar")
    watch_parser.add_argument("run_id")
    commands.add_parser("versions", help="nutrition model versions and which is served")
    rollback = commands.add_parser("rollback", help="serve an earlier nutrition version again")
    rollback.add_argument("version", type=int)
    end = commands.add_parser("end-challenger", help="retire the live challenger now")
    end.add_argument("version", type=int, nargs="?", help="the challenger to end (default: the live one)")
    quality = commands.add_parser("quality", help="every version's errors on the test set and live; a chart")
    quality.add_argument("--chart", type=Path, default=Path("quality.png"), help="the PNG to write")
    quality.add_argument("--worst-dishes", type=int, default=5)
    quality.add_argument("--min-dish-samples", type=int, default=3)
    own_data.add_commands(commands)
    for command in commands.choices.values():  # `--json` after the command works too
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    args = parser.parse_args(argv)

    metadata = (("authorization", f"Bearer {_token()}"),)
    with _channel(args) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            return _run(args, stub, metadata)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 2


def _run(args, stub, metadata) -> int:
    _print = _printer(args.json)
    code = own_data.run(args, stub, metadata, _print)
    if code is not None:
        return code
    if args.command == "analyze":
        request = gateway_pb2.AnalyzeMealRequest(
            image=args.photo.read_bytes(),
            filename=args.photo.name,
            note=args.note,
            more_images=[angle.read_bytes() for angle in args.angle],
            meal_id=args.meal,
        )
        _print(stub.AnalyzeMeal(request, metadata=metadata, timeout=120))
    elif args.command == "meal":
        _print(stub.GetMeal(gateway_pb2.GetMealRequest(meal_id=args.meal_id), metadata=metadata))
    elif args.command == "stats":
        _print(stub.GetStats(gateway_pb2.GetStatsRequest(), metadata=metadata, timeout=30))
    elif args.command == "samples":
        corrections = f"CORRECTION_FILTER_{(args.corrections or 'unspecified').upper()}"
        request = gateway_pb2.ListSamplesRequest(
            page_size=args.page_size, page_token=args.page_token, corrections=corrections
        )
        _print(stub.ListSamples(request, metadata=metadata))
    elif args.command == "review":
        decision = {"confirm": "CONFIRMED", "reject": "REJECTED", "undo": "UNREVIEWED"}[args.decision]
        request = gateway_pb2.ReviewCorrectionRequest(
            sample_id=args.sample_id, review=f"CORRECTION_REVIEW_{decision}"
        )
        _print(stub.ReviewCorrection(request, metadata=metadata))
    elif args.command == "sample":
        _print(stub.GetSample(gateway_pb2.GetSampleRequest(sample_id=args.sample_id), metadata=metadata))
    elif args.command == "correct":
        totals = (args.calories, args.proteins, args.fats, args.carbs)
        if any(v is None for v in totals) and (any(v is not None for v in totals) or not args.item):
            print("error: give --calories, --proteins, --fats and --carbs, or --item", file=sys.stderr)
            return 2
        nutrition = (
            None if totals[0] is None else common_pb2.Nutrition(**dict(zip(NUTRIENTS, totals, strict=True)))
        )
        request = gateway_pb2.CorrectSampleRequest(
            sample_id=args.sample_id, nutrition=nutrition, items=args.item
        )
        _print(stub.CorrectSample(request, metadata=metadata))
    elif args.command == "train":
        request = gateway_pb2.GatewayServiceStartTrainingRunRequest(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate
        )
        started = stub.StartTrainingRun(request, metadata=metadata, timeout=60)
        print(f"run {started.run_id} started")
        return 0 if args.no_watch else watch(stub, started.run_id, metadata)
    elif args.command == "watch":
        return watch(stub, args.run_id, metadata)
    elif args.command == "versions":
        request = gateway_pb2.GatewayServiceListModelVersionsRequest()
        _print(stub.ListModelVersions(request, metadata=metadata))
    elif args.command == "rollback":
        request = gateway_pb2.GatewayServiceRollbackModelRequest(version=args.version)
        _print(stub.RollbackModel(request, metadata=metadata))
    elif args.command == "end-challenger":
        request = gateway_pb2.GatewayServiceEndChallengerRequest(version=args.version)
        _print(stub.EndChallenger(request, metadata=metadata))
    elif args.command == "quality":
        request = gateway_pb2.GatewayServiceGetQualityReportRequest(
            worst_dishes=args.worst_dishes, min_dish_samples=args.min_dish_samples
        )
        report = stub.GetQualityReport(request, metadata=metadata, timeout=120)
        _print(report)
        print(
            f"chart: {quality_report.chart(report, args.chart)}", file=sys.stderr if args.json else sys.stdout
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
