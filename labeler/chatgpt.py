"""One ChatGPT call through the official `openai` client.

Retries (exponential backoff with jitter on 429, 5xx, connection errors and timeouts) are the
SDK's own (`max_retries`); a 401 is not retried. Our job here is the request, the limit on
concurrent calls, and turning every failure into a reason.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
from dataclasses import dataclass

import openai
from PIL import Image

from foodcal.rpc import metrics
from foodcal.settings import OPENAI_PRICES_PER_MILLION, Settings
from labeler.answer import RESPONSE_FORMAT, SYSTEM_PROMPT, Answer, InvalidAnswer, parse_answer, user_prompt
from model_store.worker.photos import at_most, reduced

log = logging.getLogger(__name__)

MAX_SIDE_PX = 768  # enough for a plate; keeps image tokens and upload size small
ANSWER_TOKENS = 1500  # the JSON answer: ~100 tokens, plus ~50 per item (at most 20)
REASONING_TOKENS = 4000  # reasoning models spend hidden tokens first, counted in the same limit

# Reasoning models (o1, o3, o4-mini, gpt-5, gpt-5-mini, ...) refuse `max_tokens` and any
# `temperature` but the default; gpt-5-chat-* is a chat model and takes both.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5(?!-chat))")


def is_reasoning_model(model: str) -> bool:
    return bool(_REASONING_MODEL.match(model.lower().rsplit("/", 1)[-1]))


def completion_parameters(model: str) -> dict:
    """Sampling parameters this model accepts. `max_completion_tokens` replaced the deprecated
    `max_tokens` for every OpenAI model; reasoning models accept only the new one."""
    if is_reasoning_model(model):
        return {"max_completion_tokens": REASONING_TOKENS}
    return {"max_completion_tokens": ANSWER_TOKENS, "temperature": 0}


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LabelFailure(Exception):
    """A call that produced no label. `reason` is one of the documented reasons."""

    def __init__(self, reason: str, message: str, usage: Usage | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.usage = usage  # set when the call was paid for (an invalid answer)


@dataclass
class ChatGPTAnswer:
    answer: Answer | None  # None when the model refused
    refusal: str
    usage: Usage
    model: str


def estimate_cost(
    model: str, prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] | None = None
) -> float:
    """`prices`: USD per 1M (input, output) tokens (settings.openai_prices); else the table's."""
    prices = prices or OPENAI_PRICES_PER_MILLION.get(model)
    if prices is None:  # unknown (e.g. a local model): free as far as we know
        return 0.0
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000


def prepare_image(data: bytes) -> str:
    """Downscale (a JPEG decodes at reduced scale), turn upright, re-encode as JPEG without EXIF
    (no GPS leaves us), return a data URL."""
    image = Image.open(io.BytesIO(data))
    fits = at_most(image.size, MAX_SIDE_PX, of=max)
    image = reduced(image, least=fits, box=fits)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _said(error: openai.APIStatusError) -> str:
    """The API's own message for a refused request (names the parameter); never holds the key."""
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message")
    return f": {str(message)[:300]}" if message else ""


class ChatGPT:
    def __init__(self, settings: Settings) -> None:
        self.model, self.prices = settings.openai_model, settings.openai_prices
        self.client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
        self._slots = asyncio.Semaphore(settings.openai_max_concurrency)

    async def close(self) -> None:
        await self.client.close()

    @metrics.chatgpt_call
    async def ask(
        self, image: bytes, hints: list[tuple[str, float]], note: str = "", angles: list[bytes] = ()
    ) -> ChatGPTAnswer:
        """`angles`: more photos of the same plate, sent in the same message (one call, one payment)."""
        # decode and re-encode: off the event loop
        urls = [await asyncio.to_thread(prepare_image, photo) for photo in (image, *angles)]
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": user_prompt(hints, note, photos=len(urls))},
                    *({"type": "image_url", "image_url": {"url": url, "detail": "low"}} for url in urls),
                ],
            },
        ]
        async with self._slots:
            try:
                completion = await self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    response_format=RESPONSE_FORMAT,
                    **completion_parameters(self.model),
                )
            except openai.AuthenticationError:
                raise LabelFailure("auth_failed", "the OpenAI API key was rejected (401)") from None
            except openai.PermissionDeniedError:
                raise LabelFailure("auth_failed", "the OpenAI API key may not use this model (403)") from None
            except openai.RateLimitError:
                raise LabelFailure("rate_limited", "OpenAI kept answering 429 after retries") from None
            except openai.APITimeoutError:
                raise LabelFailure("timeout", "OpenAI did not answer in time, after retries") from None
            except openai.APIConnectionError:
                raise LabelFailure("unavailable", "could not connect to the OpenAI endpoint") from None
            except openai.InternalServerError as error:
                raise LabelFailure(
                    "unavailable", f"OpenAI answered {error.status_code} after retries"
                ) from None
            except openai.APIStatusError as error:
                raise LabelFailure(
                    "invalid_request", f"OpenAI refused the request ({error.status_code}){_said(error)}"
                ) from None
        usage = Usage()
        if completion.usage is not None:
            usage.prompt_tokens = completion.usage.prompt_tokens or 0
            usage.completion_tokens = completion.usage.completion_tokens or 0
        usage.cost_usd = estimate_cost(self.model, usage.prompt_tokens, usage.completion_tokens, self.prices)
        if not completion.choices:
            raise LabelFailure("invalid_answer", "the answer had no choices", usage)
        choice = completion.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            return ChatGPTAnswer(None, refusal or "content filtered", usage, completion.model or self.model)
        if choice.finish_reason == "length":
            limit = f"the answer was cut off at the token limit ({usage.completion_tokens} tokens)"
            raise LabelFailure("invalid_answer", limit, usage)
        try:
            answer = parse_answer(choice.message.content)
        except InvalidAnswer as error:
            raise LabelFailure("invalid_answer", str(error), usage) from None
        return ChatGPTAnswer(answer, "", usage, completion.model or self.model)
