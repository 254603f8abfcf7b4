"""A local OpenAI-compatible chat-completions server: real HTTP on loopback, scriptable per test.

It checks each request the way OpenAI would (key, model, parameters, an image part, a JSON schema
asked for) and refuses a bad one with a 400 in the API's error shape, so a broken request fails
the test. Like the real API it refuses parameters it does not know, and reasoning models (o-series,
gpt-5) refuse `max_tokens` and any `temperature` but the default. Run it alone for demos:
    python -m tests.openai_stub --port 8099 --api-key sk-test
Run as a process (bench/abuse.py), it is scripted over HTTP: POST /stub/rules {"marker": {"delay_s",
"status", "message"}} answers a request whose prompt holds `marker` so; GET /stub/stats counts calls.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.openai_checks import check_request

GOOD_ANSWER = {
    "is_food": True,
    "dish": "margherita pizza",
    "portion_g": 250.0,
    "calories_kcal": 650.0,
    "proteins_g": 27.0,
    "fats_g": 24.0,
    "carbs_g": 80.0,
    "confidence": 0.8,
    "items": [  # add up to the totals above
        {"name": "pizza crust", "grams": 150.0, "calories_kcal": 400.0, "proteins_g": 13.0, "fats_g": 6.0,
         "carbs_g": 72.0},
        {"name": "mozzarella", "grams": 60.0, "calories_kcal": 180.0, "proteins_g": 13.0, "fats_g": 14.0,
         "carbs_g": 1.0},
        {"name": "tomato sauce", "grams": 40.0, "calories_kcal": 70.0, "proteins_g": 1.0, "fats_g": 4.0,
         "carbs_g": 7.0},
    ],
}  # fmt: skip


def completion(content: str | None, refusal: str | None = None, model: str | None = None) -> dict:
    """A chat completion; `model` None: the model the request asked for."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160},
    }


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None  # None: a good answer
    delay_s: float = 0.0
    headers: dict = field(default_factory=dict)
    raw: bytes | None = None  # send these bytes as the body instead


def answer(**overrides) -> Reply:
    return Reply(body=completion(json.dumps({**GOOD_ANSWER, **overrides})))


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}


def error(
    status: int,
    message: str = "error",
    headers: dict | None = None,
    param: str | None = None,
    code: str | None = None,
) -> Reply:
    """An error in the API's shape: {"error": {"message", "type", "param", "code"}}."""
    kind = _ERROR_TYPES.get(status, "rate_limit_error" if status == 429 else "server_error")
    return Reply(
        status=status,
        body={"error": {"message": message, "type": kind, "param": param, "code": code}},
        headers=headers or {},
    )


class OpenAIStub:
    def __init__(self, api_key: str = "sk-test") -> None:
        self.api_key = api_key
        self.script: list[Reply] = []
        self.default: Reply | None = None  # None: a good answer
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.problems: list[str] = []
        self.rules: dict[str, dict] = {}  # prompt marker -> {"delay_s", "status", "message"}
        self.paid: list[str] = []  # the image part's sha256 of each answer sent: a photo paid twice
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> OpenAIStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self, *replies: Reply, default: Reply | None = None) -> None:
        with self._lock:
            self.script, self.default = list(replies), default
            self.requests.clear()
            self.times.clear()
            self.paid.clear()
            self.rules = {}
            self.problems.clear()

    @property
    def calls(self) -> int:
        return len(self.times)

    def _next(self, body: dict, authorization: str) -> Reply:
        with self._lock:
            self.times.append(time.monotonic())
            self.requests.append(body)
            if authorization != f"Bearer {self.api_key}":
                return error(401, "Incorrect API key provided")
            problem = check_request(body)
            if problem:
                self.problems.append(problem.message)
                return error(400, problem.message, param=problem.param, code=problem.code)
            reply = self.script.pop(0) if self.script else self._ruled(body) or self.default or answer()
            if reply.raw is None and reply.body is None:
                reply = replace(reply, body=answer().body)
            if reply.body is not None and "choices" in reply.body and reply.body["model"] is None:
                reply = replace(reply, body={**reply.body, "model": body["model"]})  # like OpenAI
            if reply.status == 200:
                self.paid.append(_image_digest(body))
            return reply

    def _ruled(self, body: dict) -> Reply | None:
        text = json.dumps(body.get("messages", []))
        for marker, rule in self.rules.items():
            if marker in text:
                status = rule.get("status", 200)
                reply = answer() if status == 200 else error(status, rule.get("message", "error"))
                return replace(reply, delay_s=rule.get("delay_s", 0.0))
        return None

    def stats(self) -> dict:
        with self._lock:
            return {"calls": len(self.times), "paid": len(self.paid), "paid_images": len(set(self.paid))}

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _json(self, value: dict) -> None:
                payload = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._json(stub.stats())  # /stub/stats, the only GET

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                try:
                    body = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    body = {}
                if self.path == "/stub/rules":
                    with stub._lock:
                        stub.rules = body
                    return self._json(stub.rules)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                else:
                    reply = stub._next(body, self.headers.get("authorization", ""))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


def _image_digest(body: dict) -> str:
    for message in body.get("messages", []):
        for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                return hashlib.sha256(json.dumps(part).encode()).hexdigest()
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 inside a container")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--api-key", default="sk-test")
    args = parser.parse_args()
    stub = OpenAIStub(args.api_key)
    stub.server.server_close()
    stub.server = ThreadingHTTPServer((args.host, args.port), stub._handler())
    print(f"OpenAI-compatible stub on http://{args.host}:{args.port}/v1 (key {args.api_key})", flush=True)
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
