"""The request checks of tests/openai_stub.py: what OpenAI's chat completions would refuse with a 400.

A key, a known model, only parameters the API knows (reasoning models, o-series and gpt-5, refuse
`max_tokens` and any `temperature` but the default), a JSON schema with the four nutrients, and
one base64 JPEG image part without EXIF.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

KNOWN_MODELS = {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-5-mini", "o4-mini"}
REASONING_MODELS = {"gpt-5-mini", "o4-mini"}
# Chat-completions parameters the real API knows (the subset a labeler could plausibly send).
KNOWN_PARAMETERS = {
    "model", "messages", "response_format", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "n", "seed", "stop", "stream", "stream_options", "user", "store",
    "metadata", "reasoning_effort", "verbosity", "frequency_penalty", "presence_penalty",
    "logit_bias", "logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls",
    "service_tier", "modalities", "prediction", "audio", "safety_identifier", "prompt_cache_key",
}  # fmt: skip


@dataclass
class Problem:
    """What OpenAI would refuse with a 400: its message, and the `param` and `code` it names."""

    message: str
    param: str | None = None
    code: str | None = None


def check_parameters(body: dict) -> Problem | None:
    unknown = sorted(set(body) - KNOWN_PARAMETERS)
    if unknown:
        return Problem(f"Unrecognized request argument supplied: {unknown[0]}")
    if body.get("model") not in REASONING_MODELS:
        return None
    if "max_tokens" in body:
        return Problem(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    if "temperature" in body and body["temperature"] != 1:
        return Problem(
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
            "model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    return None


def check_request(body: dict) -> Problem | None:
    """What OpenAI would refuse with a 400, or None."""
    if body.get("model") not in KNOWN_MODELS:
        return Problem(f"The model `{body.get('model')}` does not exist", "model", "model_not_found")
    problem = check_parameters(body)
    if problem:
        return problem
    return _check_content(body)


def _check_content(body: dict) -> Problem | None:
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    if fmt.get("type") != "json_schema" or not {"calories_kcal", "proteins_g", "fats_g", "carbs_g"} <= set(
        schema.get("required", [])
    ):
        return Problem("a json_schema response_format with the four nutrients is required")
    images = [
        part
        for message in body.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    if not 1 <= len(images) <= 4:  # one plate, up to four angles (foodcal's own contract)
        return Problem("one to four image parts expected")
    for part in images:
        url = part["image_url"]["url"]
        if not url.startswith("data:image/jpeg;base64,"):
            return Problem("the image must be a base64 JPEG data URL")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        if image.format != "JPEG" or max(image.size) > 2048:
            return Problem("the image must be a JPEG of at most 2048 px")
        if image.getexif():
            return Problem("EXIF must be stripped")
    return None
