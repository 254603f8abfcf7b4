"""The README's grpcurl and CLI examples, run as written against a running system."""

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, API_TOKEN, INTERNAL_TOKEN, photo
from tests.docs_commands import fenced_sh
from tests.trainer_helpers import add_samples, learnable
from trainer.backfill import current_classifier

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """Command lines from the fenced blocks of the README's "Analyse a photo" section, then of
    docs/api.md, in order: what a person is told to type."""
    front = (ROOT / "README.md").read_text().split("## Analyse a photo", 1)[1].split("\n## ", 1)[0]
    text = front + (ROOT / "docs" / "api.md").read_text()
    return [
        line
        for block in fenced_sh(text)
        for line in block.splitlines()
        if line.strip() and not line.startswith("export")
    ]


def test_readme_is_a_front_door_with_a_photo_analysed_early_and_links_that_resolve():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    first = "\n".join(lines[:60])
    assert "foodcal.cli analyze photo.jpg" in first and "GatewayService/AnalyzeMeal" in first
    assert "```mermaid" in first  # the picture of processes, ports and data flow
    for flag in ("USE_CHATGPT", "USE_TRAINED_MODEL", "USE_OWN_MODEL_INSTEAD_CHATGPT"):
        assert f"`{flag}`" in "\n".join(lines)
    for link in re.findall(r"\]\(([^)#]+)\)", "\n".join(lines)):
        assert (ROOT / link).is_file(), link


def test_readme_shows_both_cli_and_grpcurl_for_each_task_of_the_original_guide():
    commands = readme_commands()
    for task in ("AnalyzeMeal", "GetStats", "StartTrainingRun", "WatchTrainingRun"):
        assert any(task in c and "grpcurl" in c for c in commands), task
    for verb in ("analyze", "stats", "train", "watch"):
        assert any(f"foodcal.cli {verb}" in c for c in commands), verb
    assert (ROOT / "README.md").read_text().splitlines()[3:5] == [
        "make run    # set up everything, then start TorchServe, gateway, labeler and trainer",
        "make test   # set up everything, then ruff and the whole test suite",
    ]


async def test_readme_examples_work_as_written(system, torchserve, tmp_path):
    app = await system()
    add_samples(app.db, 80, await current_classifier(torchserve.client), learnable)
    (tmp_path / "photo.jpg").write_bytes(photo())
    (tmp_path / "side.jpg").write_bytes(photo(color=(90, 160, 30)))  # another angle of the plate
    port = app.servers["gateway"].port
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "FOODCAL_TOKEN": API_TOKEN,
        "FOODCAL_ADMIN_TOKEN": ADMIN_TOKEN,
        "FOODCAL_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "FOODCAL_ADDRESS": f"127.0.0.1:{port}",
        "PYTHONPATH": str(ROOT),
    }
    found = {"RUN_ID": "", "SAMPLE_ID": ""}
    for command in readme_commands():
        for name, value in found.items():
            command = command.replace(name, value)
        command = command.replace("localhost:50051", f"localhost:{port}")
        command = command.replace("localhost:50052", f"localhost:{app.servers['labeler'].port}")
        result = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if "list" in command.split()[-1:]:
            assert "foodcal.v1.GatewayService" in result.stdout
        for key, name in (
            ("run_id", "RUN_ID"),
            ("runId", "RUN_ID"),
            ("sample_id", "SAMPLE_ID"),
            ("sampleId", "SAMPLE_ID"),
        ):
            match = re.search(rf'"{key}": "([0-9a-f]{{32}})"', result.stdout)
            if match:
                found[name] = match.group(1)
        started = re.search(r"run ([0-9a-f]{32}) started", result.stdout)
        if started:
            found["RUN_ID"] = started.group(1)
        if "LabelMeal" in command:
            label = json.loads(result.stdout)
            assert label["label"]["nutrition"]["calories_kcal"] > 0
            assert label.get("cached") or label["usage"]["total_tokens"]  # this photo was labelled above
            assert label["label"]["portion_g"] > 0 and label["label"]["confidence"] > 0
        if "GetStats" in command:
            stats = json.loads(result.stdout)
            assert int(stats.get("trainingDataSamples", stats.get("training_data_samples", 0))) >= 80
        if "cli stats" in command:  # the CLI's summary
            assert int(re.search(r"^training data samples\s+(\d+)$", result.stdout, re.M).group(1)) >= 80
        if "cli meal" in command or "GetMeal" in command:  # two plates of lunch, each with 2 photos
            assert re.search(r"meal lunch: 2 plates|\"plates_?[cC]ount\": 2", result.stdout), result.stdout
        if "cli versions" in command:
            assert re.search(r"^0\s", result.stdout, re.M), result.stdout  # version 0 is listed
    assert found["RUN_ID"] and found["SAMPLE_ID"]
