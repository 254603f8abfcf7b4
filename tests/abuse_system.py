"""The system tests/abuse.py attacks: `make run`'s supervisord.conf (TorchServe, labeler, trainer,
gateway) on free ports with the demo classifier, the OpenAI stub as its own process, and the
client tokens of the honest clients and of each attacker."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import col, func, select

from foodcal.settings import Settings, load_settings
from foodcal.store import ChatGPTCall, Database, LabelJob, Sample
from foodcal.store.tables import LabelStatus
from model_store.build import build_models
from model_store.ports import free_port
from tests.conftest import OPENAI_KEY
from tests.processes import ROOT, serving
from tests.supervised_stack import Stack, start_stack, stop_stack, supervised_env

HONEST = ("honest-client-1", "honest-client-2", "honest-client-3")
ATTACKERS = (
    "abuse-flood",
    "abuse-notes",
    "abuse-dup",
    "abuse-cancel",
    "abuse-train",
    "abuse-probe",
    "abuse-leak",
)
# The limits a client meets are the shipped defaults, whatever a developer's .env says.
DEFAULTS = ("client_rate_per_minute", "client_rate_burst", "client_call_rate_per_minute", "client_call_burst")


@dataclass
class Target:
    """What an attack reaches: the gateway, the database (read-only checks) and the stub's script."""

    gateway: str
    db: Database
    stub_url: str  # http://127.0.0.1:PORT, where /v1 and /stub/* live
    model_store: Path | None = None  # for the slow challenger: a second nutrition version
    torchserve: tuple[list[str], list[str]] | None = None  # inference, management

    def stub(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(f"{self.stub_url}{path}", data=data, timeout=5) as reply:
            return json.loads(reply.read())

    def rules(self, **rules: dict) -> None:
        """Stub answers per prompt marker (the note an attacker sends), e.g. {"delay_s": 2.5}."""
        self.stub("/stub/rules", rules)

    def paid(self) -> dict:
        return self.stub("/stub/stats")

    def count(self, *where) -> int:
        with self.db.session() as session:
            # every sample has a label job: the join keeps the count and lets `where` name its status
            return session.exec(select(func.count()).select_from(Sample).join(LabelJob).where(*where)).one()

    def existing(self, sample_ids: set[str]) -> int:
        with self.db.session() as session:
            query = select(func.count()).select_from(Sample).where(col(Sample.id).in_(sample_ids))
            return session.exec(query).one() if sample_ids else 0

    def recorded_calls(self, *where) -> int:
        with self.db.session() as session:
            return session.exec(select(func.count()).select_from(ChatGPTCall).where(*where)).one()

    def pending(self) -> int:
        return self.count(LabelJob.status == LabelStatus.PENDING)


def start_stub(port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.openai_stub", "--port", str(port), "--api-key", OPENAI_KEY],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stub/stats", timeout=1).close()
            return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the OpenAI stub did not start: {log.read_text()[-2000:]}")


def system_env(run_dir: Path, model_store: Path, stub_url: str) -> tuple[dict, dict]:
    env, ports = supervised_env(run_dir, run_dir / "state", model_store, f"{stub_url}/v1")
    env.update(
        API_TOKENS=",".join(HONEST + ATTACKERS),
        USE_OWN_MODEL_INSTEAD_CHATGPT="false",  # .env.example's default: a label before the answer
        ROLLOUT="shadow",
        ROLLOUT_CHECK_INTERVAL_S="3600",  # the trainer leaves the hand-made slow challenger alone
        LOG_LEVEL="WARNING",
        **{name.upper(): str(Settings.model_fields[name].default) for name in DEFAULTS},
    )
    return env, ports


@contextlib.contextmanager
def running_system(workdir: Path | None = None) -> Iterator[Target]:
    """Everything `make run` starts, plus the stub; stopped (SIGTERM, as Ctrl-C) at the end."""
    run_dir = Path(workdir or tempfile.mkdtemp(prefix="fc-abuse-"))  # short: sockets live here
    store = run_dir / "model_store" / "mar"
    build_models(load_settings(_env_file=None, food101_model="demo", model_store_dir=store))
    stub_port = free_port()
    stub = start_stub(stub_port, run_dir / "openai_stub.log")
    stack: Stack | None = None
    db = None
    try:
        env, ports = system_env(run_dir, store, f"http://127.0.0.1:{stub_port}")
        stack = start_stack(env, ports, run_dir)
        deadline = time.monotonic() + 240
        while not serving(ports["gateway"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway did not serve: {stack.output()[-3000:]}")
            time.sleep(0.5)
        db = Database(env["DATABASE_URL"])
        yield Target(
            f"127.0.0.1:{ports['gateway']}",
            db,
            f"http://127.0.0.1:{stub_port}",
            store,
            ([f"127.0.0.1:{ports['ts_grpc']}"], [f"127.0.0.1:{ports['ts_mgmt']}"]),
        )
    finally:
        if db is not None:
            db.dispose()
        if stack is not None:
            stop_stack(stack)
        stub.terminate()
        stub.wait(timeout=10)
