"""The one way Pantheon calls an LLM: litellm with a timeout, bounded retries and error mapping.

Asynchronous: a call waiting on its provider costs a coroutine, not a thread. A provider
problem never escapes as an exception: `complete` and `stream` always return an LlmResult,
failed ones with a status ("error" | "timeout" | "rate_limited") and an error kind. Retries
are counted here, not inside litellm or the OpenAI client, so that `attempts` on the usage
ledger is the true number of requests sent. A stream is retried only until its first words
reached the listener: what a client has seen is never said twice. A provider that says how
long to wait before the next request (`Retry-After`, `retry-after-ms`) is not asked sooner: the
retry waits that long, or, past what a call waits for its provider in all
(`retry_after_max_seconds`), is not made.

An answer is as long as its call allows (`AnswerLimit`): a provider that ignores `max_tokens`
is cut off there, its stream closed, and the answer ends as one the provider cut at its limit
would (a success with the text so far).

A reasoning model streams its reasoning first (`reasoning_content`, no text): it is neither
shown nor stored, but it tells that the provider is alive, which a stream's caller may want to
hear (`ReasoningListener`), and it is bounded apart from the answer (`REASONING_TOKENS`). The
provider bills it as output: a call metered on an estimate (its usage never came) counts the
reasoning it streamed, and so does a call retried after an attempt that reasoned and failed.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import importlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from orchestration.budget import (
    UNITS_PER_TOKEN,
    estimate_tokens,
    estimate_units,
    length_within_units,
)
from orchestration.litellm_loader import DEMO_PROVIDER, load_litellm, setup_here, uses_openai_sdk
from orchestration.types import AliasConfig, CallStatus, ErrorKind, LlmCall, LlmResult

logger = logging.getLogger(__name__)

_ERROR_MESSAGE_CHARS = 300

# How long an answer may run, from the max output tokens its call asked for: this many characters
# a token (about four times what English averages), in this many chunks a token plus a few
# (providers stream about one token a chunk, and add some chunks of their own). Only a provider
# that ignores `max_tokens` gets near either; the chunks bound what litellm keeps of a stream
# (every chunk, a few KB each), the characters what is stored and saved as it streams.
ANSWER_CHARS_PER_TOKEN = 16
# And at most this many tokens of plain estimate a token (`budget.estimate_units`): twice what 16
# ASCII characters count, so that an answer in any script its provider keeps to `max_tokens`
# (Tamil on o200k_base runs about 6.5 estimated tokens a token) is never cut, while a stored
# answer's estimate stays bounded before it is given (`answer_tokens_at_most`).
ANSWER_ESTIMATE_PER_TOKEN = 10
ANSWER_CHUNKS_PER_TOKEN = 2
ANSWER_EXTRA_CHUNKS = 64
# How long a reasoning model may reason before its answer, in tokens (the answer's max when that
# is more), at the answer's chunks a token. Its reasoning chunks are counted apart from the
# answer's: some providers do not count their reasoning in `max_tokens` (DeepSeek's reasoner
# thinks up to 32K tokens whatever the answer's max), and counted with the answer they used up
# its chunks, and cut a healthy call, before its first word. A provider that counts both in
# `max_tokens` stays within it anyway; one that reasons without end is still cut, here.
REASONING_TOKENS = 32_768

# The most a call waits in all for the pauses its provider asks before a retry (`Retry-After`),
# by default (`PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS`).
RETRY_AFTER_MAX_SECONDS = 30.0

# Receives each piece of an answer's text as the provider streams it.
DeltaListener = Callable[[str], None]
# Told of each chunk of reasoning the provider streams before its answer: it is alive. The
# reasoning itself is not passed on (nor stored, nor shown).
ReasoningListener = Callable[[], None]


@dataclass(frozen=True)
class AnswerLimit:
    """The most an answer may be: characters of text (and their estimate, `units`) and chunks
    of a stream, and the chunks of reasoning a reasoning model may stream before its text."""

    chars: int
    chunks: int
    reasoning_tokens: int = REASONING_TOKENS

    @property
    def units(self) -> int:
        """The most plain estimate of the text, in `budget.estimate_units`."""
        tokens = self.chars // ANSWER_CHARS_PER_TOKEN
        return tokens * ANSWER_ESTIMATE_PER_TOKEN * UNITS_PER_TOKEN

    @property
    def reasoning_chunks(self) -> int:
        return self.reasoning_tokens * ANSWER_CHUNKS_PER_TOKEN + ANSWER_EXTRA_CHUNKS

    @classmethod
    def of(cls, call: LlmCall) -> AnswerLimit:
        tokens = call.alias.max_output_tokens
        return cls(
            chars=tokens * ANSWER_CHARS_PER_TOKEN,
            chunks=tokens * ANSWER_CHUNKS_PER_TOKEN + ANSWER_EXTRA_CHUNKS,
            reasoning_tokens=reasoning_tokens_at_most(tokens),
        )


def reasoning_tokens_at_most(max_output_tokens: int) -> int:
    """The most reasoning a call streams before its answer (`REASONING_TOKENS`, or its
    `max_tokens` when more), and the most of it an estimate counts."""
    return max(max_output_tokens, REASONING_TOKENS)


def answer_tokens_at_most(max_output_tokens: int) -> int:
    """The most an answer's plain estimate can be (what a turn stores with its message and
    counts in the prompts after it): its text never runs past its call's limit
    (`AnswerLimit.units`), even from a provider that ignores `max_tokens`."""
    return max_output_tokens * ANSWER_ESTIMATE_PER_TOKEN


@dataclass
class _Reading:
    """What a call has delivered so far: the pieces of text the listener got (a stream that
    has reached its client is never restarted), and the usage the provider reported; and, of
    the attempt being read, the reasoning the provider streamed (or sent with an answer that
    has no usage), kept only to estimate what it bills when its usage does not come."""

    pieces: list[str] = field(default_factory=list)
    usage: tuple[int, int, int] = (0, 0, 0)
    length: int = 0  # characters in `pieces`
    units: int = 0  # their plain estimate (`budget.estimate_units`)
    thoughts: list[str] = field(default_factory=list)
    # The provider's id of the attempt being read, from its reply's headers (`replied_request_id`).
    request_id: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def reasoning(self) -> str:
        return "".join(self.thoughts)

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        self.length += len(piece)
        self.units += estimate_units(piece)


def _room(piece: str, limit: AnswerLimit, *, length: int = 0, units: int = 0) -> int:
    """How many of `piece`'s first characters fit an answer's `limit` after `length` characters
    of an estimate of `units` (`budget.estimate_units`)."""
    return length_within_units(piece[: max(limit.chars - length, 0)], limit.units - units)


# Why a provider may end an answer that has no text at all, and that answer still be one: it
# filtered its answer away, or the call's output limit ran out before its first word (a
# reasoning model that thought the whole `max_tokens` away: asked again, it would as a rule do
# the same, billed again; a stream cut at its limit gives that empty answer too). Any other
# finish with no text (it said it was done, called a tool Pantheon never offered) is no answer.
ENDS_WITHOUT_TEXT = frozenset({"content_filter", "length"})


class IncompleteAnswer(Exception):
    """A provider's 200 that holds no answer: no choices at all, a stream that stopped before
    the provider said it had finished (an HTML page, a connection closed early), or no text
    at all but for a finish in `ENDS_WITHOUT_TEXT`. litellm ends any stream with a finish of
    its own; only its record of the provider's finish tells a whole answer from a cut one. A
    provider error, retried like a 5xx."""


def _billed_for_no_answer(exc: BaseException, reading: _Reading) -> bool:
    """Whether an attempt is a whole reply without an answer that the provider billed output
    for (its usage counts completion tokens: a model that spoke or reasoned, or called a tool,
    and gave no text). Asked again, it would as a rule spend as much again for nothing, and a
    capped user's turn holds one reply's output a call: it is not retried."""
    return isinstance(exc, IncompleteAnswer) and reading.usage[2] > 0


class LlmGateway(Protocol):
    async def complete(self, call: LlmCall) -> LlmResult: ...

    async def stream(
        self,
        call: LlmCall,
        on_delta: DeltaListener,
        on_reasoning: ReasoningListener | None = None,
    ) -> LlmResult: ...

    def abandoned(self, call: LlmCall, text: str, *, latency_ms: int) -> LlmResult: ...


async def _rehearse(litellm: Any) -> None:
    request = {
        "model": "openai/warm-up",
        "messages": [{"role": "user", "content": "warm up"}],
        "mock_response": "ready",
        "api_key": "warm-up",
    }
    await litellm.acompletion(**request)
    async for _ in await litellm.acompletion(**request, stream=True):
        pass
    if uses_openai_sdk():
        # That path loads all the SDK's resources on the first call (about a second, and
        # 10 MB); litellm's own handler, the default, needs none of them.
        importlib.import_module("openai.resources")


class MissingApiKey(Exception):
    """The alias names a key variable that is not set: the call is not sent. litellm would
    fill in a key itself (`OPENAI_API_KEY` for an OpenAI-compatible model) and send it to the
    alias's `api_base`, or send none to its provider."""


def classify_error(exc: BaseException) -> tuple[CallStatus, ErrorKind, bool]:
    """(status, error_kind, retryable) for an exception raised by litellm.completion."""
    litellm = load_litellm()
    exc = _unwrapped(exc, litellm)
    if isinstance(exc, MissingApiKey):  # as the provider would refuse a call without its key
        return CallStatus.ERROR, ErrorKind.BAD_REQUEST, False
    # Timeout first: openai's APITimeoutError is a subclass of APIConnectionError, and a call
    # that already used its whole time budget is not worth repeating.
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return CallStatus.TIMEOUT, ErrorKind.TIMEOUT, False
    if isinstance(exc, IncompleteAnswer):
        return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, True
    status_code = _provider_status_code(exc, litellm)
    # The provider's HTTP status before the class litellm picked from the words of its body: a
    # 500 whose body says "invalid_request_error" is a BadRequestError to litellm, but it is the
    # provider failing, and worth another try. (A stream gone silent is a connection error
    # with a 500 to litellm: a timeout, below.)
    if status_code is not None and status_code >= 500 and not _caused_by_timeout(exc):
        return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, True
    if isinstance(exc, litellm.RateLimitError):
        return CallStatus.RATE_LIMITED, ErrorKind.RATE_LIMITED, True
    # Before BadRequestError, which it subclasses.
    if isinstance(exc, litellm.ContextWindowExceededError):
        return CallStatus.ERROR, ErrorKind.CONTEXT_WINDOW_EXCEEDED, False
    if isinstance(
        exc,
        litellm.BadRequestError
        | litellm.AuthenticationError
        | litellm.NotFoundError
        | litellm.PermissionDeniedError
        | litellm.UnprocessableEntityError,
    ):
        return CallStatus.ERROR, ErrorKind.BAD_REQUEST, False
    connection_error = (
        litellm.InternalServerError
        | litellm.ServiceUnavailableError
        | litellm.BadGatewayError
        | litellm.APIConnectionError
    )
    if isinstance(exc, connection_error):
        # A stream that went silent is a connection error to litellm, caused by the socket's
        # read timeout: a timeout, whatever wraps it.
        if _caused_by_timeout(exc):
            return CallStatus.TIMEOUT, ErrorKind.TIMEOUT, False
        return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, True
    if status_code is not None:
        if 200 <= status_code < 300:  # a 200 litellm could not read (a page, not JSON)
            return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, True
        if status_code == 429:
            return CallStatus.RATE_LIMITED, ErrorKind.RATE_LIMITED, True
        if status_code >= 500:
            return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, True
        if 400 <= status_code < 500:
            return CallStatus.ERROR, ErrorKind.BAD_REQUEST, False
    return CallStatus.ERROR, ErrorKind.PROVIDER_ERROR, False


def _unwrapped(exc: BaseException, litellm: Any) -> BaseException:
    """An error raised while a stream is read (a 429 before its first chunk, a 500 midway)
    comes wrapped in litellm's MidStreamFallbackError, a ServiceUnavailableError: the provider
    error it wraps says what happened. Anything else inside (a raw httpx error) says less than
    the wrapper, which stays: a retryable provider error."""
    seen: set[int] = set()
    while isinstance(exc, litellm.exceptions.MidStreamFallbackError) and id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "original_exception", None)
        if not isinstance(inner, BaseException) or _library_of(inner) not in _PROVIDER_LIBRARIES:
            break
        exc = inner
    return exc


_PROVIDER_LIBRARIES = {"litellm", "openai"}


def _caused_by_timeout(exc: BaseException) -> bool:
    """Whether a read or connect timeout (asyncio's, aiohttp's, httpx's) is among the causes
    of `exc`."""
    import httpx

    return any(isinstance(cause, TimeoutError | httpx.TimeoutException) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes: its `__cause__`, `__context__` (litellm raises its errors while
    handling the client's) and litellm's `original_exception`, each once."""
    seen: set[int] = set()
    causes: list[BaseException | None] = [exc]
    while causes:
        cause = causes.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        original = getattr(cause, "original_exception", None)
        causes += [
            cause.__cause__,
            cause.__context__,
            original if isinstance(original, BaseException) else None,
        ]


def retry_after_seconds(exc: BaseException, now: float) -> float | None:
    """How long the provider asked to wait before the next request, in seconds, as the reply
    that failed says it (a 429's, or a 5xx's): `retry-after-ms` (OpenAI's), else `Retry-After`
    in seconds or as an HTTP date (read against `now`, a Unix time; a date past is 0). None
    when it says nothing readable (or `exc` is no reply's). litellm keeps the reply's headers
    on its error (`litellm_response_headers`); the OpenAI SDK's errors have the reply."""
    for cause in _causes(exc):
        headers = getattr(cause, "litellm_response_headers", None)
        if headers is None:
            headers = getattr(getattr(cause, "response", None), "headers", None)
        pause = _pause_in(headers, now)
        if pause is not None:
            return pause
    return None


# The headers a provider names its request by, which its support asks for: OpenAI's and most
# OpenAI-compatible servers', Anthropic's, Azure's, AWS's.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id", "x-amzn-requestid")
_REQUEST_ID_CHARS = 100


def provider_request_id(exc: BaseException) -> str | None:
    """The provider's id of the request that failed with `exc`, from its reply's headers (as
    `retry_after_seconds` reads them): printable, at most 100 characters. None when the reply
    names none (or there was no reply)."""
    for cause in _causes(exc):
        headers = getattr(cause, "litellm_response_headers", None)
        if headers is None:
            headers = getattr(getattr(cause, "response", None), "headers", None)
        named = _request_id_in(headers)
        if named is not None:
            return named
    return None


# How litellm keeps a reply's headers on an answer or a stream (`_hidden_params`'s
# `additional_headers`): each provider's header prefixed so.
_LITELLM_HEADER_PREFIX = "llm_provider-"


def replied_request_id(response: Any) -> str | None:
    """The provider's id of the request `response` answered (a whole answer, or a stream once
    opened), from its reply's headers as litellm keeps them: as `provider_request_id` reads a
    failure's. None when the reply names none (or is no litellm answer)."""
    hidden = getattr(response, "_hidden_params", None)
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    if not isinstance(headers, dict):
        return None
    prefix = _LITELLM_HEADER_PREFIX
    return _request_id_in(
        {
            name[len(prefix) :]: value
            for name, value in headers.items()
            if isinstance(name, str) and name.lower().startswith(prefix)
        }
    )


def _lowered(headers: Any) -> dict[str, Any] | None:
    """`headers` (any mapping an HTTP client or litellm keeps them in) by lowercased name, or
    None if they cannot be read as one."""
    items = getattr(headers, "items", None)
    if items is None:
        return None
    try:
        return {str(name).lower(): value for name, value in items()}
    except Exception:
        return None


def _request_id_in(headers: Any) -> str | None:
    """The first of `REQUEST_ID_HEADERS` that `headers` name, printable, at most 100 chars."""
    said = _lowered(headers)
    if said is None:
        return None
    for name in REQUEST_ID_HEADERS:
        value = said.get(name)
        if isinstance(value, str) and value.strip():
            kept = "".join(c for c in value.strip() if c.isprintable())
            return kept[:_REQUEST_ID_CHARS] or None
    return None


def _pause_in(headers: Any, now: float) -> float | None:
    said = _lowered(headers)
    if said is None:
        return None
    milliseconds = _seconds(said.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = said.get("retry-after")
    seconds = _seconds(value)
    if seconds is not None or not isinstance(value, str):
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, its source unknown
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - now, 0.0)


def _seconds(value: Any) -> float | None:
    """A duration a header gives as a plain number (not negative, finite), None otherwise."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _library_of(exc: BaseException) -> str:
    return type(exc).__module__.split(".", 1)[0]


def _provider_status_code(exc: BaseException, litellm: Any) -> int | None:
    """The HTTP status of an API error from litellm or the OpenAI SDK, None otherwise.

    Only errors of those libraries are trusted: an arbitrary exception with a `status_code`
    attribute says nothing about the provider.
    """
    if not isinstance(exc, litellm.APIError) and _library_of(exc) not in _PROVIDER_LIBRARIES:
        return None
    status_code = getattr(exc, "status_code", None)
    return status_code if isinstance(status_code, int) else None


class CallTally:
    """This process's LLM calls of the last few minutes, for the health check: how many, how
    many failed, how many of those the provider refused the key of (401, 403: every call of
    the alias fails until an operator changes it), how long they took, and the latest failure.
    A bucket a minute, `MINUTES` of them: constant memory, and a call costs a few additions.
    Used from the event loop's thread; read from any (a glance at counters)."""

    MINUTES = 5

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # minute -> [calls, failed, refused_key, total ms, most ms]
        self._buckets: dict[int, list[int]] = {}
        # The latest failure, and its minute: shown while that minute is in the window, as the
        # counts that hold it are (a monitor alerting on it hears the alias heal).
        self.last_failure: dict[str, Any] | None = None
        self._last_failure_minute = 0

    def record(self, call: LlmCall, result: LlmResult, status_code: int | None = None) -> None:
        minute = int(self._clock() // 60)
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = self._buckets[minute] = [0, 0, 0, 0, 0]
            for old in [m for m in self._buckets if m <= minute - self.MINUTES]:
                del self._buckets[old]
        bucket[0] += 1
        bucket[3] += result.latency_ms
        bucket[4] = max(bucket[4], result.latency_ms)
        if result.ok:
            return
        bucket[1] += 1
        if status_code in (401, 403):
            bucket[2] += 1
        self._last_failure_minute = minute
        self.last_failure = {
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model_alias": call.alias.alias,
            "error_kind": str(result.error_kind),
            "provider_status": status_code,
        }

    def figures(self) -> dict[str, Any]:
        minute = int(self._clock() // 60)
        recent = [bucket for m, bucket in list(self._buckets.items()) if m > minute - self.MINUTES]
        calls = sum(bucket[0] for bucket in recent)
        return {
            "window_seconds": self.MINUTES * 60,
            "calls": calls,
            "failed": sum(bucket[1] for bucket in recent),
            "refused_key": sum(bucket[2] for bucket in recent),
            "mean_ms": round(sum(bucket[3] for bucket in recent) / calls) if calls else None,
            "max_ms": max((bucket[4] for bucket in recent), default=None),
            "last_failure": self.last_failure
            if self._last_failure_minute > minute - self.MINUTES
            else None,
        }


# This process's (every gateway of it records here: a turn makes its own).
CALLS = CallTally()


class LiteLLMGateway:
    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float = 0.5,
        retry_after_max_seconds: float = RETRY_AFTER_MAX_SECONDS,
        demo: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.retry_after_max_seconds = retry_after_max_seconds
        self.demo = demo
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock  # what a Retry-After given as a date is read against

    def warm_up(self) -> None:
        """Do now, before traffic, what the first call would pay for: import litellm (seconds),
        register the demo provider, and rehearse a mocked call, plain and streamed, through
        litellm's OpenAI-compatible path, which loads much of litellm lazily on its first use.
        Run it where no event loop is running yet."""
        litellm = load_litellm()
        if self.demo:
            self._register_demo()
        asyncio.run(_rehearse(litellm))

    async def complete(self, call: LlmCall) -> LlmResult:
        return await self._attempt(call, on_delta=None)

    async def stream(
        self,
        call: LlmCall,
        on_delta: DeltaListener,
        on_reasoning: ReasoningListener | None = None,
    ) -> LlmResult:
        return await self._attempt(call, on_delta=on_delta, on_reasoning=on_reasoning)

    def abandoned(self, call: LlmCall, text: str, *, latency_ms: int) -> LlmResult:
        """What a streamed call used that its caller abandoned after `text` had reached its
        listener (its turn was cancelled: the stream was closed, so its usage never came): the
        prompt and `text`, estimated as a stream that failed after its first words is metered
        (`usage_or_estimate`), one attempt, priced from litellm's table. The reasoning it may
        have streamed before is not known here, and not counted."""
        litellm = load_litellm()
        model, _, _ = self._target(call.alias)
        provider = DEMO_PROVIDER if self.demo else _provider_of(model, litellm)
        usage = usage_or_estimate((0, 0, 0), call, text, model)
        return self._result(
            CallStatus.ERROR, text, usage, model, provider, 1, max(latency_ms, 0), litellm
        )

    async def _attempt(
        self,
        call: LlmCall,
        *,
        on_delta: DeltaListener | None,
        on_reasoning: ReasoningListener | None = None,
    ) -> LlmResult:
        litellm = load_litellm()
        if self.demo:
            # Idempotent, and it survives a reset provider map.
            self._register_demo()
        model, api_base, api_key = self._target(call.alias)
        provider = DEMO_PROVIDER if self.demo else _provider_of(model, litellm)
        request = {
            "model": model,
            "messages": [{"role": str(m.role), "content": m.content} for m in call.messages],
            "api_base": api_base,
            "api_key": api_key,
            "timeout": self.timeout_seconds,
            "max_tokens": call.alias.max_output_tokens,
            # Hidden retries in litellm or the OpenAI client would multiply the latency and
            # the spend behind a single counted attempt. (litellm's handler also resends a
            # request whose connection failed, whatever these say: `litellm_loader` turns that
            # off.)
            "max_retries": 0,
            "num_retries": 0,
        }
        reading = _Reading()
        started = self._clock()
        attempts = 0
        # What the attempts before this one used and the provider bills: those that reasoned
        # before they failed (nothing of them reached the listener, so they were retried).
        retried = (0, 0, 0)
        paused = 0.0  # seconds waited so far for the pauses the provider asked
        while True:
            attempts += 1
            attempt_started = self._clock()
            reading.usage = (0, 0, 0)  # a failed attempt's usage is not this one's
            reading.thoughts.clear()
            reading.request_id = None
            try:
                if call.alias.missing_key and not self.demo:
                    attempts = 0  # no request is sent (a ledger row's attempts count them)
                    raise MissingApiKey(
                        f"The alias's API key variable {call.alias.missing_key} is not set: "
                        "the call was not sent."
                    )
                if on_delta is None:
                    response = await self._complete(litellm, request, call)
                    reading.request_id = replied_request_id(response)
                    reading.usage = read_usage(response, call)
                    if not _field(response, "choices"):
                        raise IncompleteAnswer("The provider's reply held no answer (no choices).")
                    text = _within_limit(_reply_text(response), call)
                    if not reading.usage[0] and (thought := _reply_reasoning(response)):
                        reading.thoughts.append(thought)
                    reason = _finish_reason(response)
                    if not text and reason not in ENDS_WITHOUT_TEXT:
                        raise IncompleteAnswer(
                            f"The provider's reply held no answer (no text; finish {reason})."
                        )
                else:
                    await self._read_stream(litellm, request, call, on_delta, on_reasoning, reading)
                    text = reading.text
                usage = usage_or_estimate(reading.usage, call, text, model, reading.reasoning)
                usage = _added(retried, usage)
                latency = self._elapsed_ms(started)
                if attempts > 1:
                    # The retries' lines said each attempt failed and another was coming: this
                    # one says the last was answered (else the call's fate was the ledger's).
                    logger.info(
                        "LLM call %s/%s for %s answered at attempt %d in %d ms in all",
                        call.purpose,
                        call.agent_key or "-",
                        call.alias.alias,
                        attempts,
                        latency,
                        extra={
                            "llm_purpose": str(call.purpose),
                            "agent_key": call.agent_key or None,
                            "model_alias": call.alias.alias,
                            "attempts": attempts,
                            "duration_ms": latency,
                        },
                    )
                answered = self._result(
                    CallStatus.SUCCESS,
                    text,
                    usage,
                    model,
                    provider,
                    attempts,
                    latency,
                    litellm,
                    request_id=reading.request_id,
                )
                CALLS.record(call, answered)
                return answered
            except Exception as exc:
                status, error_kind, retryable = classify_error(exc)
                delay = None
                if (
                    retryable
                    and attempts <= self.max_retries
                    and not reading.pieces
                    and not _billed_for_no_answer(exc, reading)
                ):
                    delay = self._retry_delay(exc, call, error_kind, attempts, paused)
                if delay is not None:
                    if reading.thoughts or reading.usage[0]:
                        # It reasoned, or answered with its usage (a reply with no text): the
                        # provider took the prompt and what it spoke, and bills it.
                        spent = usage_or_estimate(reading.usage, call, "", model, reading.reasoning)
                        retried = _added(retried, spent)
                    backoff, asked = delay
                    paused += asked
                    pause = max(backoff, asked)
                    took = self._elapsed_ms(attempt_started)
                    said = _failure(call, exc, error_kind, reading.request_id)
                    logger.info(
                        "LLM call %s/%s for %s: attempt %d failed (%s) in %d ms, retry %d of %d "
                        "in %.2fs%s%s: %s",
                        call.purpose,
                        call.agent_key or "-",
                        call.alias.alias,
                        attempts,
                        said.kind,
                        took,
                        attempts,
                        self.max_retries,
                        pause,
                        ", as its provider asked" if asked > backoff else "",
                        said.request_id_note,
                        said.message,
                        extra=said.fields(
                            attempt=attempts,
                            duration_ms=took,
                            retry_in_seconds=round(pause, 3),
                        ),
                    )
                    await self._sleep(pause)
                    continue
                latency = self._elapsed_ms(started)
                said = _failure(call, exc, error_kind, reading.request_id)
                message = said.message
                logger.log(
                    logging.ERROR if said.refused_credentials else logging.WARNING,
                    "LLM call %s/%s for %s failed (%s) after %d attempt(s) in %d ms%s%s: %s",
                    call.purpose,
                    call.agent_key or "-",
                    call.alias.alias,
                    said.kind,
                    attempts,
                    latency,
                    # Why a user billed for an answer they saw cut says so: what had reached
                    # them is billed (below), and kept the call from being retried.
                    f", {reading.length} characters streamed to its listener before"
                    if reading.pieces
                    else "",
                    said.request_id_note,
                    message,
                    extra=said.fields(
                        attempts=attempts, duration_ms=latency, streamed_chars=reading.length
                    ),
                )
                # What was streamed before the failure: the listener has it already. The
                # provider took the prompt and spoke (or reasoned) that much, and bills it: its
                # usage, else an estimate. A call that failed before its first word or thought
                # is metered as 0, but for the attempts before it that reasoned.
                text = reading.text
                usage = reading.usage
                if not usage[0] and (text or reading.thoughts):
                    usage = usage_or_estimate(usage, call, text, model, reading.reasoning)
                usage = _added(retried, usage)
                result = self._result(
                    status, text, usage, model, provider, attempts, latency, litellm
                )
                failed = replace(
                    result,
                    error_kind=error_kind,
                    error_message=message,
                    request_id=said.request_id,
                )
                CALLS.record(call, failed, said.status_code)
                return failed

    def _retry_delay(
        self, exc: BaseException, call: LlmCall, error_kind: str, attempts: int, paused: float
    ) -> tuple[float, float] | None:
        """(the backoff, the pause the provider asked, 0 if none) before retrying the attempt
        that failed with `exc`, the retry waiting the longer of them; None when the provider
        asks for a pause the call cannot wait (it would take the call's waits for its provider
        past `retry_after_max_seconds`): a retry sooner would be refused, so none is made."""
        backoff = self.backoff_seconds * 2 ** (attempts - 1)
        asked = retry_after_seconds(exc, self._wall_clock())
        if asked is None or asked <= backoff:
            return backoff, 0.0
        if paused + asked <= self.retry_after_max_seconds:
            return backoff, asked
        logger.info(
            "LLM call %s/%s for %s failed (%s) and its provider asks to wait %.1fs, past the "
            "%gs a call waits for its provider in all (%.1fs waited): not retried",
            call.purpose,
            call.agent_key or "-",
            call.alias.alias,
            error_kind,
            asked,
            self.retry_after_max_seconds,
            paused,
        )
        return None

    async def _complete(self, litellm: Any, request: dict[str, Any], call: LlmCall) -> Any:
        """The provider's whole reply. litellm refuses one whose usage it cannot read (a count
        that is text fails its Usage model) as it would a broken reply, though the answer is
        there: that reply is taken as the provider sent it (litellm hands its body to the call's
        `logger_fn` before reading it), without its usage, which is then estimated as for a
        reply that has none."""
        logged: list[dict[str, Any]] = []  # litellm's record of the call, as it goes
        try:
            with setup_here():
                return await asyncio.wait_for(
                    litellm.acompletion(**request, logger_fn=logged.append), self.timeout_seconds
                )
        except Exception as exc:
            reply = _reply_refused_for_its_usage(exc, logged)
            if reply is None:
                raise
            logger.warning(
                "LLM call %s/%s for %s answered with usage that cannot be read (%.200r): it "
                "is metered on an estimate",
                call.purpose,
                call.agent_key or "-",
                call.alias.alias,
                reply.pop("usage", None),
            )
            return reply

    async def _read_stream(
        self,
        litellm: Any,
        request: dict[str, Any],
        call: LlmCall,
        on_delta: DeltaListener,
        on_reasoning: ReasoningListener | None,
        reading: _Reading,
    ) -> None:
        """Stream the answer to `on_delta` piece by piece, kept in `reading` with the usage,
        which comes with the last chunk; each chunk of reasoning before it is told to
        `on_reasoning`, and kept in `reading` too (the provider bills it). The timeout bounds
        each wait for the next chunk, not the whole answer. An answer past its limit stops
        there: the text up to the limit is kept and the provider's stream closed (its usage,
        which comes last, never arrives). So does one whose reasoning goes past its own limit,
        with what text it has (none, as a rule)."""
        with setup_here():
            response = await asyncio.wait_for(
                litellm.acompletion(**request, stream=True, stream_options={"include_usage": True}),
                self.timeout_seconds,
            )
        reading.request_id = replied_request_id(response)
        limit = AnswerLimit.of(call)
        chunks = response.__aiter__()
        received = reasoned = 0  # chunks of the answer, chunks of reasoning
        try:
            while True:
                try:
                    # A deadline on this task, not `wait_for`: that ran each chunk's read as a
                    # task of its own, one more task and trip round the event loop a chunk.
                    async with asyncio.timeout(self.timeout_seconds):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    if _stream_finish_reason(response) is None:
                        raise
                    # The provider said its answer was whole; what failed came after it (usage
                    # litellm cannot read, a connection lost before the stream's end). The
                    # answer stands, metered on an estimate if its usage never came.
                    logger.warning(
                        "LLM call %s/%s for %s failed after its answer was whole (%s): the "
                        "answer stands%s",
                        call.purpose,
                        call.agent_key or "-",
                        call.alias.alias,
                        _short_error(exc, call.alias.api_key),
                        "" if reading.usage[0] else ", metered on an estimate",
                    )
                    break
                choices = _field(chunk, "choices") or []
                delta = _field(choices[0], "delta") if choices else None
                piece = _field(delta, "content")
                if not piece and (thought := _field(delta, "reasoning_content")):
                    reasoned += 1
                    if reasoned > limit.reasoning_chunks:
                        logger.warning(
                            "LLM call %s/%s for %s went past its reasoning limit (%d chunks); "
                            "its answer is cut at %d characters",
                            call.purpose,
                            call.agent_key or "-",
                            call.alias.alias,
                            limit.reasoning_chunks,
                            reading.length,
                        )
                        return
                    if isinstance(thought, str):
                        reading.thoughts.append(thought)
                    if on_reasoning is not None:
                        on_reasoning()
                    continue
                received += 1
                if received > limit.chunks:
                    _log_cut(call, limit, reading.length, received)
                    return
                if _field(chunk, "usage") is not None and _usage_reported(response):
                    reading.usage = read_usage(chunk, call)
                if isinstance(piece, str) and piece:
                    piece = storable_text(piece)
                    room = _room(piece, limit, length=reading.length, units=reading.units)
                    if piece[:room]:
                        reading.add(piece[:room])
                        on_delta(piece[:room])
                    if len(piece) > room:
                        _log_cut(call, limit, reading.length, received)
                        return
                if _usage_was_last(response):
                    break
        finally:
            await _close(response)
        if _provider_never_finished(response):
            raise IncompleteAnswer("The provider's stream ended before its answer did.")
        reason = _stream_finish_reason(response)
        if not reading.pieces and reason not in ENDS_WITHOUT_TEXT:
            raise IncompleteAnswer(
                f"The provider's stream held no answer (no text; finish {reason})."
            )

    def _target(self, alias: AliasConfig) -> tuple[str, str | None, str | None]:
        if self.demo:
            return f"{DEMO_PROVIDER}/{alias.alias}", None, None
        return alias.litellm_model, alias.api_base, alias.api_key

    def _register_demo(self) -> None:
        from orchestration.demo_provider import register_demo_provider

        register_demo_provider()

    def _result(
        self,
        status: CallStatus,
        text: str,
        usage: tuple[int, int, int],
        model: str,
        provider: str,
        attempts: int,
        latency_ms: int,
        litellm: Any,
        request_id: str | None = None,
    ) -> LlmResult:
        prompt_tokens, cached_tokens, output_tokens = usage
        fresh = max(prompt_tokens - cached_tokens, 0)
        return LlmResult(
            status=status,
            text=text,
            input_tokens_fresh=fresh,
            input_tokens_cached=cached_tokens,
            output_tokens=output_tokens,
            latency_ms=latency_ms,
            attempts=attempts,
            provider=provider,
            provider_model=model,
            provider_cost_usd=None
            if self.demo
            else table_cost(model, fresh, cached_tokens, output_tokens, litellm),
            request_id=request_id,
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(int(round((self._clock() - started) * 1000)), 0)


def _within_limit(text: str, call: LlmCall) -> str:
    """A whole answer (not streamed) cut to its call's limit: it is in memory already, but what
    is stored and sent on stays bounded."""
    limit = AnswerLimit.of(call)
    room = _room(text, limit)
    if room == len(text):
        return text
    _log_cut(call, limit, room, None)
    return text[:room]


def _log_cut(call: LlmCall, limit: AnswerLimit, length: int, chunks: int | None) -> None:
    logger.warning(
        "LLM call %s/%s for %s went past its answer limit (max_tokens %d: %d characters, %d "
        "estimated tokens, %d chunks); its answer is cut at %d characters%s",
        call.purpose,
        call.agent_key or "-",
        call.alias.alias,
        call.alias.max_output_tokens,
        limit.chars,
        limit.units // UNITS_PER_TOKEN,
        limit.chunks,
        length,
        "" if chunks is None else f" after {chunks} chunks",
    )


async def _close(stream: Any) -> None:
    """Close a provider's stream, read to its end or not: one left half-read keeps its
    connection, and litellm its chunks, until it is collected. A close that fails changes
    nothing about the answer."""
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:
        logger.debug("closing a provider's stream failed: %s", exc)


def _usage_was_last(stream: Any) -> bool:
    """Whether litellm's stream wrapper has handed on the chunk of usage it ends a stream with
    (asked for it, `include_usage`): it has nothing after it, and reading on only has it build
    the whole reply from its chunks once more, for its own success log and cache (Pantheon
    keeps neither), before it says the stream is over. A wrapper without that record (not
    litellm's) is read to its end."""
    return getattr(stream, "sent_stream_usage", None) is True


def _provider_never_finished(stream: Any) -> bool:
    """Whether litellm's stream wrapper saw the provider end its answer (a `finish_reason`).
    A wrapper without that record (not litellm's) is taken at its word."""
    if not hasattr(stream, "received_finish_reason"):
        return False
    return _stream_finish_reason(stream) is None


def _usage_reported(stream: Any) -> bool:
    """Whether the usage litellm's stream wrapper ends with is the provider's. Asked for it
    (`include_usage`), litellm ends every stream with a chunk of usage: the provider's where it
    sent any, else a count of its own (its tokenizer, the prompt's template), which is no
    provider's bill: such a stream is metered as a plain reply without usage is (an estimate, or
    nothing for a call that failed before its first word). The wrapper keeps every chunk it
    read from the provider, those with usage as the provider sent them. A wrapper without that
    record (not litellm's) is taken at its word."""
    chunks = getattr(stream, "chunks", None)
    if not isinstance(chunks, list):
        return True
    return any(_field(chunk, "usage") is not None for chunk in reversed(chunks))


def _stream_finish_reason(stream: Any) -> str | None:
    """Why the provider said its stream's answer ended ("stop", "length"…), as litellm's
    wrapper recorded it; None when it did not say (or the wrapper is not litellm's)."""
    finished = getattr(stream, "received_finish_reason", None)
    return finished or getattr(stream, "intermittent_finish_reason", None)


def _finish_reason(response: Any) -> str | None:
    """Why a whole reply's answer ended, None when it does not say. A reply that calls tools
    ended for them, whatever it says."""
    choices = _field(response, "choices") or []
    if not choices:
        return None
    if _field(_field(choices[0], "message"), "tool_calls"):
        return "tool_calls"
    reason = _field(choices[0], "finish_reason")
    return reason if isinstance(reason, str) else None


def _reply_refused_for_its_usage(
    exc: BaseException, logged: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The reply litellm refused only because it could not read its usage (its Usage model's
    validation error is among the causes of `exc`), as the provider sent it; None for any
    other failure. `logged` is litellm's record of the call (`logger_fn`), which holds the
    provider's body once litellm has it."""
    if not any(getattr(cause, "title", None) == "Usage" for cause in _causes(exc)):
        return None
    body = logged[-1].get("original_response") if logged else None
    if not isinstance(body, str):
        return None
    try:
        reply = json.loads(body)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def usage_or_estimate(
    usage: tuple[int, int, int], call: LlmCall, text: str, model: str, reasoning: str = ""
) -> tuple[int, int, int]:
    """The provider's usage, or an estimate when it sent none (a prompt is never 0 tokens):
    the call still costs what it used, never a silent $0. A stream is estimated the same way:
    the usage litellm counts itself for a stream that came without any is not taken
    (`_usage_reported`). The reasoning a provider streamed before its answer is output it
    bills, and counts as such.

    An estimated answer counts at most the `max_tokens` its call asked for: the estimate runs
    long on purpose, and an answer cut at its limit (up to 16 characters a token, or 10
    estimated tokens) would otherwise be billed up to ten times what the turn's credit hold
    assumed. Its reasoning counts at most its own bound (`REASONING_TOKENS`, or `max_tokens`
    when more)."""
    if usage[0] > 0:
        return usage
    prompt = sum(estimate_tokens(message.content, model) for message in call.messages)
    answer = usage[2]
    if not answer:
        answer = min(estimate_tokens(text, model), call.alias.max_output_tokens)
        if reasoning:
            bound = reasoning_tokens_at_most(call.alias.max_output_tokens)
            answer += min(estimate_tokens(reasoning, model), bound)
    return prompt, 0, answer


def _added(first: tuple[int, int, int], second: tuple[int, int, int]) -> tuple[int, int, int]:
    """Two attempts' usage as one call's, each count within what a ledger row stores."""
    return (
        min(first[0] + second[0], MAX_TOKENS_PER_COUNT),
        min(first[1] + second[1], MAX_TOKENS_PER_COUNT),
        min(first[2] + second[2], MAX_TOKENS_PER_COUNT),
    )


def read_usage(response: Any, call: LlmCall) -> tuple[int, int, int]:
    """(prompt, cached prompt, completion) tokens; cached is 0 when the provider is silent.

    Usage that no call of the alias can have used is a provider's bug, not a bill: a count that
    is negative or not a number, a prompt (or its cached part) larger than the alias's window,
    a cached part larger than the prompt it is part of, an answer longer than
    `most_output_tokens`. Such usage counts as none, so the call is
    metered on an estimate as one without usage is, and a warning names the call."""
    usage = _field(response, "usage")
    if usage is None:
        return 0, 0, 0
    reported = _field(usage, "prompt_tokens"), _field(usage, "completion_tokens")
    prompt, completion = _count(reported[0]), _count(reported[1])
    cached = _count(_field(_field(usage, "prompt_tokens_details"), "cached_tokens"))
    if not cached:
        cached = _count(_field(usage, "cache_read_input_tokens"))
    window = min(call.alias.context_window, MAX_TOKENS_PER_COUNT)
    most_output = most_output_tokens(call.alias)
    if (
        min(prompt, cached, completion) < 0
        or max(prompt, cached) > window
        or cached > prompt
        or completion > most_output
    ):
        logger.warning(
            "LLM call %s/%s for %s reported usage it cannot have used (prompt %.40r, "
            "completion %.40r, cached %s; a window of %d, output up to %d): it is metered on "
            "an estimate",
            call.purpose,
            call.agent_key or "-",
            call.alias.alias,
            *reported,
            cached if cached >= 0 else "unreadable",
            call.alias.context_window,
            most_output,
        )
        return 0, 0, 0
    return prompt, cached, completion


def most_output_tokens(alias: AliasConfig) -> int:
    """The most output tokens a call of `alias` can be billed for: as many as its window holds
    (no model writes more), or, where that is more, its `max_output_tokens` and the reasoning
    a call may do beside them (`REASONING_TOKENS`, as `AnswerLimit` bounds it: some providers
    do not count reasoning in `max_tokens`). A provider that ignores `max_tokens` is billed its
    usage up to there."""
    answer = alias.max_output_tokens
    most = max(alias.context_window, answer + reasoning_tokens_at_most(answer))
    return min(most, MAX_TOKENS_PER_COUNT)


def _reply_text(response: Any) -> str:
    choices = _field(response, "choices") or []
    if not choices:
        return ""
    content = _field(_field(choices[0], "message"), "content")
    if not isinstance(content, str):
        return ""
    return storable_text(content)


def _reply_reasoning(response: Any) -> str:
    """The reasoning a reasoning model sent with its whole answer ("" if none)."""
    choices = _field(response, "choices") or []
    reasoning = _field(_field(choices[0], "message"), "reasoning_content") if choices else None
    return reasoning if isinstance(reasoning, str) else ""


def storable_text(text: str) -> str:
    """Text a database can store: lone surrogates (a cut-off emoji escape) become "?", NULs go
    (PostgreSQL text refuses them; no reader wants one either). Character by character, so
    the pieces of a stream clean up to the same text as the whole answer."""
    return text.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "")


def table_cost(model: str, fresh: int, cached: int, output: int, litellm: Any) -> Decimal | None:
    """The call's cost by litellm's own price table, None when the table does not know the
    model (litellm answers those with a $0 that only means "unknown": it must not reach the
    ledger as a real price). Computed here once from the counts, not by litellm per call."""
    entry = litellm.model_cost.get(model)
    if entry is None and "/" in model:
        entry = litellm.model_cost.get(model.partition("/")[2])
    if not isinstance(entry, dict):
        return None
    try:
        input_price = Decimal(str(entry["input_cost_per_token"]))
        output_price = Decimal(str(entry["output_cost_per_token"]))
        cached_price = Decimal(str(entry.get("cache_read_input_token_cost") or input_price))
    except (KeyError, InvalidOperation, TypeError):
        return None
    return fresh * input_price + cached * cached_price + output * output_price


@functools.lru_cache(maxsize=256)
def _provider_of(model: str, litellm: Any) -> str:
    """The provider litellm routes `model` to (`get_llm_provider`, a walk of its provider lists:
    a model's provider does not change while the process runs, so it is asked once a model)."""
    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:
        provider = None
    if provider:
        return str(provider)
    prefix, slash, _ = model.partition("/")
    return prefix if slash and prefix else "unknown"


@dataclass(frozen=True)
class _FailureSaid:
    """What an operator's line says of a failed attempt: the provider's error (`_short_error`),
    its HTTP status, its id of the request; as words, and as fields of a JSON line."""

    call: LlmCall
    error_kind: str
    message: str
    status_code: int | None
    request_id: str | None

    @property
    def refused_credentials(self) -> bool:
        """A 401 or 403: the provider refused the alias's key (rotated, revoked, mistyped).
        Every call of the alias fails so until an operator changes it: an error, not one
        user's bad luck."""
        return self.status_code in (401, 403)

    @property
    def kind(self) -> str:
        if self.refused_credentials:
            return f"{self.error_kind}, HTTP {self.status_code}: the provider refused its key"
        if self.status_code is not None:
            return f"{self.error_kind}, HTTP {self.status_code}"
        return self.error_kind

    @property
    def request_id_note(self) -> str:
        return f" (provider request id {self.request_id})" if self.request_id else ""

    def fields(self, **more: Any) -> dict[str, Any]:
        return {
            "llm_purpose": str(self.call.purpose),
            "agent_key": self.call.agent_key or None,
            "model_alias": self.call.alias.alias,
            "error_kind": str(self.error_kind),
            "provider_status": self.status_code,
            "provider_request_id": self.request_id,
            **more,
        }


def _replied_status(exc: BaseException, litellm: Any) -> int | None:
    """The HTTP status the provider replied with, None when it did not reply with one: litellm
    gives a connection lost (a stream cut midway, a reset, a refusal) the status 500 and a
    timeout 408 of its own, which no provider sent: a line saying "HTTP 500" there sends the
    operator to the provider's error pages instead of the network."""
    import httpx

    made_up = (
        litellm.Timeout
        | litellm.APIConnectionError
        | litellm.exceptions.MidStreamFallbackError  # what it wraps said more (`_unwrapped`)
    )
    if isinstance(exc, made_up):
        return None
    # A reset or a refused connection comes as an InternalServerError "500" whose causes hold
    # the socket's error (httpx's, aiohttp's, the OS's).
    if any(isinstance(cause, httpx.TransportError | OSError) for cause in _causes(exc)):
        return None
    return _provider_status_code(exc, litellm)


def _failure(
    call: LlmCall, exc: BaseException, error_kind: str, replied: str | None = None
) -> _FailureSaid:
    """`replied`: the request id of the reply the attempt was reading (a stream that failed
    after it opened), when the error names none."""
    litellm = load_litellm()
    return _FailureSaid(
        call=call,
        error_kind=error_kind,
        message=_short_error(exc, call.alias.api_key),
        status_code=_replied_status(_unwrapped(exc, litellm), litellm),
        request_id=provider_request_id(exc) or replied,
    )


def _short_error(exc: BaseException, api_key: str | None) -> str:
    """What the operator's log says of a failed call: the provider's error on one line, without
    the key, at most `_ERROR_MESSAGE_CHARS` long. Its other unprintable characters (a terminal
    escape, a NUL of a body that is not UTF-8, a right-to-left override) are written as their
    escapes: read raw, they would act on the operator's terminal or reorder the line."""
    message = f"{type(exc).__name__}: {exc}"
    if api_key:
        message = message.replace(api_key, "***")
    message = " ".join(message.split())
    if not message.isprintable():
        message = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message
        )
    if len(message) > _ERROR_MESSAGE_CHARS:
        message = message[: _ERROR_MESSAGE_CHARS - 1] + "…"
    return message


def _field(container: Any, name: str) -> Any:
    if container is None:
        return None
    if isinstance(container, dict):
        return container.get(name)
    return getattr(container, name, None)


# No single call uses this many tokens, whatever its alias's window says; a larger count is a
# provider bug (`read_usage`), and the bound keeps a ledger row storable (the sum of three counts
# stays within a 32-bit column).
MAX_TOKENS_PER_COUNT = 500_000_000


def _count(value: Any) -> int:
    """A count of tokens as the provider reported it: 0 when it gave none, -1 when what it gave
    is no count (negative, text, not finite)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return -1
    if isinstance(value, float) and not math.isfinite(value):
        return -1
    return int(value) if value >= 0 else -1
