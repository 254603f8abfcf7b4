"""One gRPC target over every TorchServe replica, balanced and retried by gRPC itself."""

import pytest

from model_store.channels import balanced_target
from model_store.torchserve_client import TorchServeClient


def test_ip_addresses_become_one_static_target_and_one_address_stays_as_it_is():
    assert balanced_target(["127.0.0.1:7070", "10.0.0.2:7070"]) == "ipv4:127.0.0.1:7070,10.0.0.2:7070"
    assert balanced_target(["[::1]:7070", "[fd00::2]:7070"]) == "ipv6:[::1]:7070,[fd00::2]:7070"
    assert balanced_target(["torchserve:7070"]) == "torchserve:7070"  # a DNS name may list several


async def test_several_host_names_need_one_dns_target_and_say_so():
    with pytest.raises(ValueError, match="TORCHSERVE_INFERENCE_TARGET"):
        balanced_target(["torchserve-0.torchserve:7070", "torchserve-1.torchserve:7070"])
    client = TorchServeClient(
        ["torchserve-0.torchserve:7070", "torchserve-1.torchserve:7070"],
        ["torchserve-0.torchserve:7071", "torchserve-1.torchserve:7071"],
        inference_target="dns:///torchserve:7070",
    )
    assert client.target == "dns:///torchserve:7070" and len(client.replicas) == 2
    await client.close()
