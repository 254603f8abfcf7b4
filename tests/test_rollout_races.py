"""Rollout decisions made on state that changed while they were judged: each re-checks its premise
under the swap lock and is dropped when another trainer, a newer run or an operator came first.

The interleavings are forced: the evidence read (which takes seconds in production) is where the
other swap happens, through a second VersionStore on the same database (another trainer)."""

import asyncio

import grpc
import numpy as np
import pytest
from sqlmodel import select

import trainer.rollout as rollout_module
from foodcal.store import ModelVersionRow, Rollout, RolloutState, RunStatus
from foodcal.v1 import gateway_pb2
from tests.conftest import API_TOKEN, auth
from tests.swap_helpers import trainers_on_one_database
from trainer.live_evidence import Evidence
from trainer.live_rules import RolloutPolicy
from trainer.rollout import Rollouts

LABELS = np.random.default_rng(0).uniform(100, 600, size=(40, 4))
CLOSE, FAR = LABELS * 1.01, LABELS * 1.6


def shadow() -> RolloutPolicy:
    return RolloutPolicy("shadow", 0.0, min_samples=20, rollback_window=40, rollback_min_samples=20)


@pytest.fixture
def trainers(database_url, tmp_path, monkeypatch):
    monkeypatch.setattr(rollout_module, "RETIRE_GRACE_S", 0.0)
    yield from trainers_on_one_database(database_url, tmp_path)


def rollout_of(db, version: int) -> Rollout:
    with db.session() as session:
        return session.exec(select(Rollout).where(Rollout.version == version)).one()


def during_evidence(coroutine_factory, evidence: Evidence):
    """An evidence reader that first lets another swap run to its end (it runs in a worker thread)."""
    loop = asyncio.get_running_loop()

    def read(*args):
        asyncio.run_coroutine_threadsafe(coroutine_factory(), loop).result(timeout=30)
        return evidence

    return read


async def test_an_automatic_rollback_never_undoes_a_deploy_made_while_it_judged(trainers, monkeypatch):
    (first, second), replicas = trainers
    rows = {row.version: row for row in first.all()}
    rollouts = Rollouts(first.db, first, shadow())
    await first.deploy(rows[1], 48, replacing=0)
    await rollouts.deployed(1, 0, "beats v0")
    # v1 turns clearly worse than v0; while that is judged, another trainer deploys v2 over v1.
    newer = during_evidence(lambda: second.deploy(rows[2], 48, replacing=1), Evidence(FAR, CLOSE, LABELS))
    monkeypatch.setattr(rollouts, "_served_evidence", newer)
    await rollouts.check()

    assert first.served().version == 2 and replicas.default == "2"  # not rolled back to v0
    assert rollout_of(first.db, 1).state == RolloutState.SERVED
    monkeypatch.setattr(rollouts, "_served_evidence", lambda rollout: None)
    await rollouts.check()  # the next check ends v1's watch
    assert [d["decision"] for d in rollout_of(first.db, 1).decisions] == ["deployed", "superseded"]


async def test_a_challenger_retired_by_a_newer_run_is_not_promoted_by_the_check_judging_it(
    trainers, monkeypatch
):
    (first, second), replicas = trainers
    rows = {row.version: row for row in first.all()}
    rollouts, newer_run = Rollouts(first.db, first, shadow()), Rollouts(second.db, second, shadow())
    await rollouts.start_challenger(rows[1], 0, 48, "beats v0")
    # v1 wins on live traffic; while that is judged, a newer run makes v2 the challenger of v0.
    go_live = lambda: newer_run.go_live(rows[2], 48, 0, "beats v0", lambda: False)  # noqa: E731
    monkeypatch.setattr(
        rollout_module, "challenger_evidence", during_evidence(go_live, Evidence(CLOSE, FAR, LABELS))
    )
    await rollouts.check()

    assert first.served().version == 0 and replicas.default == "0"
    retired = rollout_of(first.db, 1)
    assert retired.state == RolloutState.RETIRED
    assert [d["decision"] for d in retired.decisions] == ["challenger", "retired"]
    assert "replaced by the newer challenger v2" in retired.decisions[-1]["reason"]
    assert rollout_of(first.db, 2).state == RolloutState.CHALLENGER and "2" in replicas.versions


async def test_a_run_compared_with_a_version_no_longer_served_does_not_go_live(trainers, monkeypatch):
    (first, second), replicas = trainers
    rows = {row.version: row for row in first.all()}
    rollouts = Rollouts(first.db, first, shadow())
    await rollouts.start_challenger(rows[1], 0, 48, "beats v0")
    monkeypatch.setattr(rollout_module, "challenger_evidence", lambda db, r: Evidence(CLOSE, FAR, LABELS))
    await rollouts.check()  # v1 is promoted while a run trains against v0
    assert first.served().version == 1

    run_rollouts = Rollouts(second.db, second, shadow())
    status, message = await run_rollouts.go_live(rows[2], 48, 0, "beats v0", lambda: False)
    assert status == RunStatus.NOT_DEPLOYED
    assert "v1 became the served version" in message and "compared its candidate with v0" in message
    with first.db.session() as session:
        assert session.exec(select(Rollout).where(Rollout.version == 2)).first() is None
    assert "2" not in replicas.versions and replicas.default == "1"


async def test_a_rollback_to_the_live_challenger_promotes_it_and_keeps_it_served(trainers):
    (first, _), replicas = trainers
    rows = {row.version: row for row in first.all()}
    rollouts = Rollouts(first.db, first, shadow())
    await rollouts.start_challenger(rows[1], 0, 48, "beats v0")

    assert await rollouts.rollback(1) == (1, 0)
    await rollouts.check()  # before: retired as "v1 became the served version", while served

    rollout = rollout_of(first.db, 1)
    assert rollout.state == RolloutState.SERVED and rollout.served_at is not None
    assert [d["decision"] for d in rollout.decisions] == ["challenger", "promoted"]
    assert "rollback" in rollout.decisions[-1]["reason"]
    assert first.served().version == 1 and replicas.default == "1" and "1" in replicas.versions


async def test_an_admin_ends_the_live_challenger_through_the_gateway(system):
    app = await system(services=("trainer", "gateway"), use_chatgpt=False)
    with app.db.session() as session:
        session.add(ModelVersionRow(version=1, mar_path="/nonexistent/nutrition-v1.mar"))
        session.add(Rollout(version=1, baseline_version=0, mode="shadow", state=RolloutState.CHALLENGER))
    end = gateway_pb2.GatewayServiceEndChallengerRequest

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await app.gateway.EndChallenger(end(), metadata=auth(API_TOKEN))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await app.gateway.EndChallenger(end(version=2), metadata=auth())
    assert (
        wrong.value.code() == grpc.StatusCode.NOT_FOUND and "no live challenger v2" in wrong.value.details()
    )

    ended = await app.gateway.EndChallenger(end(), metadata=auth())
    assert (ended.version, ended.baseline_version) == (1, 0)
    rollout = rollout_of(app.db, 1)
    assert rollout.state == RolloutState.RETIRED and rollout.decisions[-1]["reason"] == "ended by an operator"
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await app.gateway.EndChallenger(end(version=1), metadata=auth())
    assert again.value.code() == grpc.StatusCode.NOT_FOUND
