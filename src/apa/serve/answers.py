"""Every answer that is not a result: ``{"error": message, "code": code}`` with its status.

The message is for people (what is wrong and what to do); the code is for programs and stays
stable across versions: a client branches on ``code``, never on the wording. Each code is
listed here with its status and meaning, once: the OpenAPI schema's ``code`` enum and
docs/method.md's table come from this list, and tests check that every refusal's code is in
it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

# code -> (HTTP status, meaning)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "malformed": (400, "the body is not the multipart form it claims to be, or a field is malformed"),
    "missing_field": (422, "a required form field (audio, text) is missing or a field has the wrong type"),
    "no_key": (401, "an API key is needed and none was sent"),
    "bad_key": (401, "the API key sent is not valid"),
    "not_found": (404, "no such path"),
    "method_not_allowed": (405, "the path exists but not with this method"),
    "timeout": (408, "the request was not sent within the read deadline"),
    "too_large": (413, "the upload is larger than the limit"),
    "audio_format": (415, "the audio cannot be decoded (unknown, unaccepted or damaged format)"),
    "text_missing": (422, "the form has no text field"),
    "text_empty": (422, "the text is empty"),
    "text": (422, "the text cannot be read aloud as typed (e.g. a number too long to say)"),
    "task": (422, "unknown task"),
    "too_many_words": (422, "more words than the word limit"),
    "too_costly": (422, "more scores (slots) than the cost limit"),
    "unknown_words": (422, "words with no known pronunciation"),
    "audio_sample_rate": (422, "sample rate below 8 kHz or above 192 kHz"),
    "audio_channels": (422, "more than 8 channels, or none"),
    "audio_too_long": (422, "longer than the model's window or --max-seconds"),
    "audio_too_short": (422, "shorter than 0.2 s"),
    "audio_empty": (422, "no samples"),
    "audio_silent": (422, "digital silence (peak below -60 dBFS)"),
    "audio_non_finite": (422, "NaN or infinite samples"),
    "audio_out_of_range": (422, "samples far beyond full scale (damaged or wrongly scaled)"),
    "audio_invalid": (422, "the audio cannot be used for another reason, given in the message"),
    "rate_limited": (429, "the rate limit is reached (Retry-After)"),
    "key_attempts": (429, "too many missing or wrong keys from this address (Retry-After)"),
    "internal": (500, "an unexpected error on the server (logged, counted in /metrics)"),
    "model_error": (500, "the model failed on this request"),
    "busy": (503, "the queue is full (Retry-After)"),
    "draining": (503, "the server is shutting down (Retry-After)"),
    "cancelled": (503, "scoring was stopped (Retry-After)"),
    "deadline": (504, "not scored within the deadline; its work is stopped"),
}


def error_response(status: int, message: str, code: str, headers: dict | None = None) -> JSONResponse:
    if code not in ERROR_CODES:  # a code a client could not look up is a bug here, not the client's
        raise ValueError(f"error code {code!r} is not in apa.serve.answers.ERROR_CODES")
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def code_for_status(status: int) -> str:
    """The code of an error raised by the framework itself (404, 405, ...)."""
    return {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "malformed"}.get(status, "malformed")
