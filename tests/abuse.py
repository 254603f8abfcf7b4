"""`make abuse`: the attacks of issue 30 against the system `make run` starts, one after another,
while honest clients keep calling (tests/abuse_load.py).

For each attack it prints what was tried and what the attacker got, the honest clients' p50/p99
during it as a ratio to their quiet p99 measured at the start of the same run, and, once the load
is paused and the label queue is idle, that nothing was lost (every sample a client was answered
with is stored, and only those), and that every ChatGPT answer the stub sent is recorded once and
no photo was paid twice. Writes bench/results/abuse.txt and .json; exits 1 if a check failed.
Ratios, not times, are the result: this machine is shared and small.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial

from bench.harness import machine, machine_lines, progress, save, table
from tests.abuse_load import HonestLoad
from tests.abuse_money import cancelled_labels, duplicate_probe, label_error_leak, training_flood
from tests.abuse_stall import Outcome, correct_flood, duplicate_retries, oversized_notes, slow_challenger
from tests.abuse_system import HONEST, Target, running_system

WARMUP_S = 4.0  # after each honest client's first answers
SETTLE_S = 45.0  # the label queue's retries of attack 12's 500s take ~10 s
ATTACKS = {  # the item numbers; 10 first, while the honest clients hold few samples
    10: training_flood,
    1: correct_flood,
    2: oversized_notes,
    3: duplicate_retries,
    11: duplicate_probe,
    12: label_error_leak,
    7: cancelled_labels,
    4: slow_challenger,
}
RPCS = ("AnalyzeMeal", "GetSample")


def ledger(target: Target, told: set[str]) -> dict:
    paid = target.paid()
    return {
        "rows": target.count(),
        "told": len(told),
        "unrecorded": paid["paid"] - target.recorded_calls(),
        "twice": paid["paid"] - paid["paid_images"],
        "paid": paid["paid"],
    }


async def settle(target: Target) -> None:
    """Until no label is pending and the bill has not moved for a second (at most SETTLE_S)."""
    deadline, last, still_since = time.monotonic() + SETTLE_S, None, time.monotonic()
    while time.monotonic() < deadline:
        now = (target.pending(), ledger(target, set()))
        if now != last:
            last, still_since = now, time.monotonic()
        elif not now[0] and time.monotonic() - still_since >= 1.0:
            return
        await asyncio.sleep(0.2)


async def suite(target: Target, seconds: float, quiet_s: float, only: list[int] | None = None) -> dict:
    told: set[str] = set()
    results, began = [], time.monotonic()
    async with HonestLoad(target.gateway, HONEST) as honest:
        deadline = time.monotonic() + 180
        while len(honest.told) < 2 * len(HONEST) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # a cold TorchServe takes seconds to answer its first photos
        await asyncio.sleep(WARMUP_S)
        quiet_window = (time.monotonic(), time.monotonic() + quiet_s)
        await asyncio.sleep(quiet_s)
        # Each attack is judged from a still store and bill to the next: an honest call in flight
        # (paid, not yet recorded) must not look like a call the attack left unrecorded.
        await honest.pause()
        await settle(target)
        told |= honest.told
        before = ledger(target, told)
        honest.resume()
        for number, attack in ATTACKS.items():
            if only and number not in only:
                continue
            run = (
                partial(attack, target, honest)
                if attack is duplicate_probe
                else partial(attack, target, seconds)
            )
            started = time.monotonic()
            progress(f"{time.monotonic() - began:.0f} s: attack {number}, {attack.__name__}")
            try:
                outcome: Outcome = await run()
            except Exception as error:  # the other attacks still run; the report says what failed
                outcome = Outcome(f"{number} (did not run)", attack.__name__, skipped=repr(error)[:300])
                outcome.checks["the attack ran"] = False
            # a quick attack is measured for `seconds` too: the load it leaves behind counts
            await asyncio.sleep(started + seconds - time.monotonic())
            window = outcome.window or (started, time.monotonic())
            await honest.pause()
            progress(f"attack {number} done in {time.monotonic() - started:.0f} s; settling")
            await settle(target)
            if outcome.after is not None:
                await outcome.after()
            told |= honest.told | outcome.told
            after = ledger(target, told)
            honest.resume()
            results.append(result(outcome, before, after, target.existing(told), len(told), window))
            before = after
        end_window = (time.monotonic(), time.monotonic() + quiet_s)
        await asyncio.sleep(quiet_s)
        await honest.pause()  # every call sent in a window has answered
    quiet = {rpc: honest.summary(*quiet_window, rpc) for rpc in RPCS}
    for r in results:
        window = r.pop("window")
        r["honest"] = {rpc: honest.summary(*window, rpc) for rpc in RPCS}
        r["p99_ratio"] = {rpc: r["honest"][rpc]["p99_ms"] / quiet[rpc]["p99_ms"] for rpc in RPCS}
    quiet_end = {rpc: honest.summary(*end_window, rpc) for rpc in RPCS}
    return {"quiet": quiet, "quiet_at_end": quiet_end, "attacks": results, "seconds": seconds}


def result(outcome: Outcome, before: dict, after: dict, existing: int, told: int, window) -> dict:
    checks = {
        **outcome.checks,
        "nothing lost": existing == told,
        "stored only what was answered": after["rows"] - before["rows"] == after["told"] - before["told"],
        "every paid call recorded": after["unrecorded"] == before["unrecorded"],
        "no photo paid twice": after["twice"] == before["twice"],
    }
    return {
        "attack": outcome.name,
        "tried": outcome.tried,
        "skipped": outcome.skipped,
        "attacker_got": dict(outcome.codes.most_common()),
        "facts": outcome.facts,
        "window": window,
        "stored": after["rows"] - before["rows"],
        "paid": after["paid"] - before["paid"],
        "paid_unrecorded": after["unrecorded"] - before["unrecorded"],
        "paid_twice": after["twice"] - before["twice"],
        "lost": told - existing,
        "checks": checks,
    }


def report(outcome: dict) -> str:
    quiet = outcome["quiet"]
    lines = [
        "abuse suite (issue 30): the system `make run` starts; 3 honest clients call throughout, from the",
        "process that attacks, on the same machine (an attacker's CPU slows them too).",
        *machine_lines(outcome["machine"]),
        "honest clients quiet (ms): "
        + "; ".join(
            f"{rpc} p50 {q['p50_ms']:.0f} p99 {q['p99_ms']:.0f} (n={q['n']})" for rpc, q in quiet.items()
        ),
        "",
    ]
    rows = []
    for r in outcome["attacks"]:
        failed = [name for name, ok in r["checks"].items() if not ok]
        ratio = {rpc: f"{r['honest'][rpc]['p99_ms']:.0f} ({r['p99_ratio'][rpc]:.1f}x)" for rpc in RPCS}
        honest_failed = sum(r["honest"][rpc]["failed"] for rpc in RPCS)
        verdict = "FAILED: " + "; ".join(failed) if failed else "skipped" if r["skipped"] else "ok"
        money = [r["paid"], r["paid_unrecorded"], r["paid_twice"]]
        rows.append([r["attack"], *ratio.values(), honest_failed, r["lost"], r["stored"], *money, verdict])
    headers = ["attack", "AnalyzeMeal p99 ms (x quiet)", "GetSample p99 ms (x quiet)", "honest failed"]
    lines.append(table([*headers, "lost", "stored", "paid", "unrecorded", "paid twice", "checks"], rows))
    for r in outcome["attacks"]:
        lines += ["", f"{r['attack']}: {r['tried']}"]
        if r["skipped"]:
            lines.append(f"  skipped: {r['skipped']}")
        got = ", ".join(f"{code} x{n}" for code, n in r["attacker_got"].items())
        lines.append(f"  attacker got: {got or '-'}")
        lines += [f"  {fact}" for fact in r["facts"]]
        lines.append(
            "  " + "; ".join(f"{'ok' if ok else 'FAILED'} {name}" for name, ok in r["checks"].items())
        )
    end = outcome["quiet_at_end"]
    lines += ["", "honest clients quiet again at the end (ms): "]
    lines[-1] += "; ".join(f"{rpc} p50 {q['p50_ms']:.0f} p99 {q['p99_ms']:.0f}" for rpc, q in end.items())
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each flood lasts")
    parser.add_argument("--quiet", type=float, default=12.0, help="the quiet baseline's length")
    parser.add_argument("--only", type=int, nargs="*", help="the issue's item numbers to run")
    args = parser.parse_args()
    info = machine()
    with running_system() as target:
        outcome = asyncio.run(suite(target, args.seconds, args.quiet, args.only))
    outcome["machine"] = info
    text = report(outcome)
    print(text)
    if not args.only:
        save("abuse", outcome, text)
    if any(not ok for r in outcome["attacks"] for ok in r["checks"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
