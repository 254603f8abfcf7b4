"""The gateway's training messages are twins of the trainer's: gateway/training_rpcs.py converts one
to the other by its wire bytes, which is right only while both have the same fields."""

import pytest

from foodcal.v1 import common_pb2, gateway_pb2, trainer_pb2
from gateway.training_rpcs import FORWARDED, twin, twins


def fields(message_type) -> set[tuple]:
    return {
        (
            field.number,
            field.name,
            field.type,
            field.is_repeated,
            field.has_presence,
            field.message_type.full_name if field.message_type else "",
            field.enum_type.full_name if field.enum_type else "",
        )
        for field in message_type.DESCRIPTOR.fields
    }


@pytest.mark.parametrize("rpc", FORWARDED)
def test_each_forwarded_rpc_has_twin_messages_with_the_same_fields(rpc):
    (request, trainer_request), (response, trainer_response) = twins(rpc)
    for ours, theirs in ((request, trainer_request), (response, trainer_response)):
        assert ours.DESCRIPTOR.file.name == "foodcal/v1/gateway.proto"
        assert theirs.DESCRIPTOR.file.name == "foodcal/v1/trainer.proto"
        assert fields(ours) == fields(theirs)
    assert fields(response), rpc  # every response has fields: the comparison compared something


def test_the_gateway_service_uses_its_own_messages_for_every_forwarded_rpc():
    methods = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].methods_by_name
    for rpc in FORWARDED:
        (request, _), (response, _) = twins(rpc)
        assert methods[rpc].input_type is request.DESCRIPTOR
        assert methods[rpc].output_type is response.DESCRIPTOR


def test_a_twin_keeps_every_value_and_presence():
    request = gateway_pb2.GatewayServiceStartTrainingRunRequest(epochs=0, learning_rate=0.01)
    forwarded = twin(request, trainer_pb2.StartTrainingRunRequest)
    assert forwarded.HasField("epochs") and forwarded.epochs == 0 and not forwarded.HasField("batch_size")
    run = common_pb2.TrainingRun(run_id="r", result_version=0)
    event = trainer_pb2.WatchTrainingRunResponse(event=common_pb2.TrainingEvent(outcome=run))
    back = twin(event, gateway_pb2.GatewayServiceWatchTrainingRunResponse)
    assert back.event.outcome.HasField("result_version") and back.event.outcome.run_id == "r"
