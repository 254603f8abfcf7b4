"""NutritionReplicas.hot_swap's failure report: what is actually served after the undo."""

import pytest

from model_store.torchserve_client import ModelServerError, NutritionPrediction, TorchServeClient
from trainer.hot_swap import NutritionReplicas


class Replicas:
    """The management calls hot_swap makes, against in-memory replicas; failures on request."""

    def __init__(self, client: TorchServeClient, served: list[str]) -> None:
        self.client, self.served = client, served
        self.registered = [{"0", s} for s in served]
        self.fail: set[tuple[str, int, str]] = set()  # (call, replica, version)

    def index(self, replica) -> int:
        return self.client.replicas.index(replica)

    def check(self, call: str, index: int, version: str) -> None:
        if (call, index, version) in self.fail:
            raise ModelServerError(f"{call} v{version} on replica {index}: UNAVAILABLE")

    async def served_version(self, model="nutrition", replica=0):
        self.check("describe", replica, "")
        return self.served[replica]

    async def registered_versions(self, model="nutrition", replica=0):
        return sorted(self.registered[replica])

    async def register(self, replica, mar_name, **_):
        version = mar_name.removeprefix("nutrition-v").removesuffix(".mar")
        self.check("register", self.index(replica), version)
        self.registered[self.index(replica)].add(version)

    async def predict_nutrition(self, embedding, probabilities, version=None, replica=None):
        return NutritionPrediction(1.0, 1.0, 1.0, 1.0, version)

    async def set_default(self, replica, model, version):
        index = self.index(replica)
        self.check("set_default", index, version)
        self.served[index] = version

    async def unregister(self, replica, model, version):
        self.registered[self.index(replica)].discard(version)


@pytest.fixture
async def two_replicas(monkeypatch):
    client = TorchServeClient(["127.0.0.1:1", "127.0.0.1:2"], ["127.0.0.1:3", "127.0.0.1:4"])
    fake = Replicas(client, ["1", "1"])
    for name in ("served_version", "registered_versions", "register", "predict_nutrition"):
        monkeypatch.setattr(client, name, getattr(fake, name))
    monkeypatch.setattr(client, "set_default", fake.set_default)
    monkeypatch.setattr(client, "unregister", fake.unregister)
    yield client, fake
    await client.close()


async def test_a_failed_swap_whose_undo_worked_says_the_old_version_is_served(two_replicas):
    client, fake = two_replicas
    fake.fail.add(("set_default", 1, "3"))
    with pytest.raises(ModelServerError) as raised:
        await NutritionReplicas(client).hot_swap("nutrition-v3.mar", 3, 48, drain_s=0)
    assert fake.served == ["1", "1"]
    assert "the old version is still served (v1 on every replica)" in str(raised.value)


async def test_a_failed_swap_whose_undo_failed_says_what_each_replica_serves(two_replicas):
    client, fake = two_replicas
    fake.fail |= {("set_default", 1, "3"), ("set_default", 0, "1")}  # the swap, then its undo, fail
    with pytest.raises(ModelServerError) as raised:
        await NutritionReplicas(client).hot_swap("nutrition-v3.mar", 3, 48, drain_s=0)
    message = str(raised.value)
    assert fake.served == ["3", "1"]
    assert "still served" not in message
    assert "127.0.0.1:1 serves v3" in message and "127.0.0.1:2 serves v1" in message
    assert "undo failed" in message


async def test_a_failed_swap_with_a_replica_unreadable_after_the_undo_says_unknown(two_replicas):
    client, fake = two_replicas
    fake.fail |= {("set_default", 1, "3"), ("set_default", 0, "1")}
    original = fake.served_version
    calls = 0

    async def served_version(model="nutrition", replica=0):
        nonlocal calls
        calls += 1
        if calls > 2 and replica == 0:  # after the undo: that replica no longer answers
            raise ModelServerError("model server unreachable (describe nutrition)", unavailable=True)
        return await original(model, replica)

    client.served_version = served_version
    with pytest.raises(ModelServerError) as raised:
        await NutritionReplicas(client).hot_swap("nutrition-v3.mar", 3, 48, drain_s=0)
    assert "127.0.0.1:1 serves an unknown version" in str(raised.value)


async def test_registering_a_version_that_one_replica_refuses_leaves_it_on_none(two_replicas):
    client, fake = two_replicas
    fake.fail.add(("register", 1, "4"))
    with pytest.raises(ModelServerError, match="registering nutrition v4 failed: register v4 on replica 1"):
        await NutritionReplicas(client).register("nutrition-v4.mar", 4, 48)
    assert fake.registered == [{"0", "1"}, {"0", "1"}] and fake.served == ["1", "1"]


async def test_a_registered_version_is_served_and_then_unregistered_on_every_replica(two_replicas):
    client, fake = two_replicas
    replicas = NutritionReplicas(client)
    await replicas.register("nutrition-v4.mar", 4, 48)
    assert fake.registered == [{"0", "1", "4"}, {"0", "1", "4"}] and fake.served == ["1", "1"]
    await replicas.set_default(4)
    assert await replicas.defaults() == ["4", "4"]
    await replicas.set_default(1)
    await replicas.unregister(4)
    assert fake.registered == [{"0", "1"}, {"0", "1"}]


async def test_setting_a_default_that_one_replica_refuses_switches_none(two_replicas):
    client, fake = two_replicas
    await NutritionReplicas(client).register("nutrition-v4.mar", 4, 48)
    fake.fail.add(("set_default", 1, "4"))
    with pytest.raises(ModelServerError, match=r"serving nutrition v4 failed: .*still served \(v1 on every"):
        await NutritionReplicas(client).set_default(4)
    assert fake.served == ["1", "1"]
