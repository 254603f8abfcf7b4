"""The abuse suite's code path (tests/abuse.py) in seconds: one attack, in-process services; what
it measures is left to `make abuse`, which runs every attack against real processes."""

from bench.harness import machine
from tests.abuse import report, suite
from tests.abuse_system import ATTACKERS, HONEST, Target


async def test_the_abuse_suite_runs_an_attack_and_checks_the_store_and_the_bill(system, openai_stub):
    running = await system(api_tokens=[*HONEST, *ATTACKERS])
    target = Target(
        f"127.0.0.1:{running.settings.gateway_port}", running.db, openai_stub.base_url.removesuffix("/v1")
    )

    outcome = await suite(target, seconds=1.0, quiet_s=1.0, only=[2])

    (notes,) = outcome["attacks"]
    assert set(notes["attacker_got"]) == {"INVALID_ARGUMENT/NOTE_TOO_LONG"}
    assert all(notes["checks"].values()), notes["checks"]
    assert notes["honest"]["GetSample"]["n"] > 0
    assert "2 oversized notes" in report({**outcome, "machine": machine()})
