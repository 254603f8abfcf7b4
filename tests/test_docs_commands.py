"""The shell commands of docs/operations.md and docs/security.md, run as written: only the
documented default ports are replaced by the test's own (the README's and docs/api.md's commands
are tests/test_readme.py's; docs/deploy.md's run in `make compose-test`)."""

from __future__ import annotations

import json
import re

from tests.conftest import photo
from tests.docs_commands import documented, documented_certificate, run_shell
from tests.metrics_helpers import analyze


async def test_the_operations_docs_curl_commands_answer_as_documented(stack, torchserve, tmp_path):
    await analyze(stack, photo((40, 90, 160)))  # TorchServe counts inference requests once there are some
    ports = {
        "8081": torchserve.config.management_http_port,
        "8082": torchserve.config.metrics_port,
        "9151": stack.metrics_ports["gateway"],
    }
    commands = documented("operations.md", "curl ")
    assert len(commands) == 4, commands
    answers = {}
    for command in commands:
        port = re.search(r"127\.0\.0\.1:(\d+)", command).group(1)
        answers[command] = run_shell(command.replace(f":{port}", f":{ports[port]}"), tmp_path)

    models, versions, gateway_metrics, torchserve_metrics = answers.values()
    assert {"food101", "nutrition"} <= {m["modelName"] for m in json.loads(models)["models"]}
    assert {v["modelName"] for v in json.loads(versions)} == {"nutrition"}
    assert "0" in {v["modelVersion"] for v in json.loads(versions)}
    assert 'grpc_method="AnalyzeMeal"' in gateway_metrics
    assert all(line.startswith("foodcal_grpc_server_handled_total{") for line in gateway_metrics.splitlines())
    served = re.search(r"^ts_inference_requests_total\{.*\} [1-9]", torchserve_metrics, re.M)
    assert served, torchserve_metrics


def test_the_security_docs_openssl_command_makes_a_certificate_for_localhost(tmp_path):
    cert, key = documented_certificate(tmp_path)
    text = run_shell(f"openssl x509 -in {cert} -noout -text", tmp_path)
    assert "DNS:localhost, IP Address:127.0.0.1" in text
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
