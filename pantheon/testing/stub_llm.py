"""An OpenAI-compatible LLM provider stub on 127.0.0.1, for live-server tests and benchmarks.

It answers `POST /v1/chat/completions` (plain and streamed) the way a slow provider would, with
the delay chosen by the model name, so an alias set to `openai/<name>` with this stub as its
`api_base` behaves as asked:

- `slow-<ms>`: the whole answer after <ms> milliseconds (streamed: the first word then);
- `stream-<ms>`: a word every <ms> milliseconds (plain: the answer after all of them);
- anything else: at once.

`words-<n>` in the name makes the answer <n> words long (12 by default): `stream-100-words-600`
streams for a minute. `long-<n>` makes each word <n> characters long. The stub ignores
`max_tokens`, as a misbehaving provider does: `words-100000` streams megabytes.

`reasoning-<n>` makes it a reasoning model (DeepSeek's reasoner, say): <n> chunks of reasoning
(`reasoning_content`, no `content`) come before the answer's first word, at the pace of its
words, and count in its usage (`completion_tokens`, and `completion_tokens_details`'s
`reasoning_tokens`); `stream-100-reasoning-50` thinks for five seconds, then answers. Plain,
the reasoning comes in the answer's message, after the same wait.

A misbehaving provider, by a word in the model name (with or without a delay):

- `no-usage`: no `usage` in the answer, nor a usage chunk at the end of a stream;
- `early-usage`: a stream whose usage chunk comes after its first word, before the rest of the
  answer and its `finish_reason` (as some OpenAI-compatible servers send it);
- `no-choices`: `"choices": []`, as a plain JSON answer even when a stream was asked for;
- `empty-stream`: a stream of one chunk with `"choices": []`, then `[DONE]` (no answer, no
  finish, no usage);
- `unfinished`: a stream that ends cleanly before its last chunk (no `finish_reason`, no usage,
  no `[DONE]`);
- `stall`: a stream that sends its first two chunks (words, or a reasoning model's thoughts),
  then nothing for a minute;
- `fail-<n>`: the first <n> streams of this model name fail after their reasoning, before the
  answer's first word, with an error in the stream (a 503, no usage), as vLLM's do; the next
  ones are whole (a provider's failure that a retry gets past);
- `reset-<n>`: the first <n> requests of this model name (plain or streamed) are answered with a
  TCP reset once their body is read, before any byte of an answer (a connection a proxy or a
  crashed provider drops); the next ones are answered;
- `limited-<n>`: the first <n> requests of this model name are answered 429 (a rate limit), the
  next ones whole; `wait-<s>` in the name makes the 429 say `Retry-After: <s>` (seconds),
  `wait-date-<s>` the same as an HTTP date <s> seconds ahead, `wait-ms-<ms>` `retry-after-ms`
  (OpenAI's, in milliseconds);
- `not-json`: a 200 whose body is an HTML page, plain or streamed;
- `null-content`: a 200 that says it finished (`finish_reason` "stop") but holds no text: the
  message's `content` is null; streamed, no chunk has any `content`; `empty-content` the same
  with `content` "";
- `tool-calls`: a 200 whose message calls a tool instead of answering (`content` null,
  `tool_calls`, `finish_reason` "tool_calls"); streamed, a chunk of the tool call and no text;
- `finish-<reason>`: the answer ends with that `finish_reason` instead of "stop"
  (`empty-content-finish-length`: no text, cut at the provider's limit);
- `huge-usage`: usage of 10^15 prompt and completion tokens; `text-usage`: usage whose counts
  are text ("abc"); `over-cached`: more cached prompt tokens (`prompt_tokens_details`) than the
  prompt had;
- `http-500-invalid-request`: an HTTP 500 whose JSON error says `invalid_request_error`;
  `http-<status>` any other status with an OpenAI-style JSON error (`http-400` says the context
  is too long, `context_length_exceeded`, as OpenAI's does);
- `drop-mid`: a stream whose connection is closed (no last chunk, no `[DONE]`) after its first two
  chunks, as a proxy that restarts closes it;
- `bad-chunk`: a stream whose third chunk is not JSON (`data: {"id": ...` cut short), the
  others whole;
- `hang-headers`: a plain answer whose status and headers come at once, then no byte of its
  body for a minute;
- `context-exceeded`: the same as `http-400`;
- `same-word`: every word of the answer is "word" (`words-500-same-word`: "word" 500 times,
  streamed as the same chunk again and again).

`varied` makes every word different (64 hex digits of a hash, cut by `long-<n>`), text that
PostgreSQL's compression cannot shrink, as a real answer's barely shrinks.

Every answer names its request in an `x-request-id` header (`req_stub_<hex>`, kept in
`StubLLM.request_ids` in order), as OpenAI's do.

`GET /stats` reports how many completions were requested, the largest request body (bytes) and
the most messages one held, the most answered at once, and how many their caller closed before
the end (`hung_up`, also `StubLLM.hung_up`): streams, and plain
answers whose caller left while it waited for them (seen within 50 ms).
asyncio throughout: hundreds of waiting requests cost a coroutine each, so the stub never
becomes the bottleneck it measures.

    python -m pantheon.testing.stub_llm --port 8765     # or StubLLM().start() in a test
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from email.utils import formatdate
from typing import Any

from aiohttp import web

WORDS = 12
# Pending connections the listening socket holds: a burst of hundreds of calls connects at once.
BACKLOG = 2048
_DELAY = re.compile(r"(slow|stream)-(\d+)")
_LENGTH = re.compile(r"words-(\d+)")
_WIDTH = re.compile(r"long-(\d+)")
_REASONING = re.compile(r"reasoning-(\d+)")
_FAILURES = re.compile(r"fail-(\d+)")
_RESETS = re.compile(r"reset-(\d+)")
_LIMITED = re.compile(r"limited-(\d+)")
_WAIT = re.compile(r"wait-(date-|ms-)?(\d+)")
_FINISH = re.compile(r"finish-([a-z_]+)")
_STATUS = re.compile(r"http-(\d{3})")
# The tool a `tool-calls` answer calls (Pantheon offers none: a provider that calls one anyway).
_TOOL_CALL = {
    "id": "call_stub",
    "type": "function",
    "function": {"name": "lookup", "arguments": "{}"},
}


def _plan(model: str) -> tuple[float, float]:
    """(seconds before the first word, seconds between words) for a model name."""
    match = _DELAY.search(model)
    if match is None:
        return 0.0, 0.0
    seconds = int(match.group(2)) / 1000
    return (seconds, 0.0) if match.group(1) == "slow" else (seconds, seconds)


def _words(model: str, messages: list[dict[str, Any]]) -> list[str]:
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    quoted = " ".join(str(last.get("content", "")).split()[:4])
    words = f"Stub answer to «{quoted}»: one two three four five six".split()[:WORDS]
    length = _LENGTH.search(model)
    if length is not None:
        wanted = int(length.group(1))
        words = (words * (wanted // len(words) + 1))[:wanted]
    if "varied" in model:
        words = [hashlib.sha256(str(index).encode()).hexdigest() for index in range(len(words))]
    width = _WIDTH.search(model)
    if width is not None:
        wanted = int(width.group(1))
        words = [(word * (wanted // len(word) + 1))[:wanted] for word in words]
    if "same-word" in model:
        words = ["word"] * len(words)
    return words


def _finish(model: str) -> str:
    """The `finish_reason` the answer ends with."""
    match = _FINISH.search(model)
    if match is not None:
        return match.group(1)
    return "tool_calls" if "tool-calls" in model else "stop"


def _content(model: str, words: list[str]) -> str | None:
    """The answer's text as a plain reply holds it (null or empty if the name says so)."""
    if "null-content" in model or "tool-calls" in model:
        return None
    return "" if "empty-content" in model else " ".join(words)


def _thoughts(model: str) -> list[str]:
    """The reasoning before the answer, a piece a chunk (none unless the name asks)."""
    match = _REASONING.search(model)
    count = int(match.group(1)) if match is not None else 0
    return [("" if index == 0 else " ") + f"thought {index + 1}." for index in range(count)]


def _usage(
    model: str, messages: list[dict[str, Any]], words: list[str], thoughts: list[str]
) -> dict[str, Any]:
    prompt: Any = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
    completion: Any = len(words) + len(thoughts)  # a provider bills its reasoning as output
    if "huge-usage" in model:
        prompt = completion = 1e15
    elif "text-usage" in model:
        prompt = completion = "abc"
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if "over-cached" in model:
        usage["prompt_tokens_details"] = {"cached_tokens": prompt * 5}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": len(thoughts)}
    return usage


def _counted(seen: dict[str, int], pattern: re.Pattern[str], model: str) -> bool:
    """Whether this request of `model` is one of the first <n> its name asks to misbehave
    (`pattern`'s number), counted in `seen`."""
    match = pattern.search(model)
    if match is None or seen.get(model, 0) >= int(match.group(1)):
        return False
    seen[model] = seen.get(model, 0) + 1
    return True


def _wait(model: str) -> dict[str, str]:
    """The headers of a 429 that says how long to wait (`wait-…` in the model name)."""
    match = _WAIT.search(model)
    if match is None:
        return {}
    form, number = match.group(1), int(match.group(2))
    if form == "ms-":
        return {"retry-after-ms": str(number)}
    if form == "date-":
        return {"Retry-After": formatdate(time.time() + number, usegmt=True)}
    return {"Retry-After": str(number)}


def _reset(request: web.Request) -> None:
    """Drop the request's connection with a TCP reset (RST, not FIN): no answer at all."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _error_status(status: int) -> web.Response:
    """An HTTP error of `status` with OpenAI's error body (`http-<status>`)."""
    if status == 400:
        error = {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    else:
        error = {"message": f"The server answered {status}.", "type": "server_error"}
    return web.json_response({"error": error}, status=status)


async def _still_asked(request: web.Request, seconds: float) -> bool:
    """Wait `seconds`, or less if the caller hangs up meanwhile: whether it is still there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if request.transport is None or request.transport.is_closing():
            return False
        await asyncio.sleep(min(left, 0.05))
    return request.transport is not None and not request.transport.is_closing()


class StubLLM:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.requests = 0
        # The largest request body (bytes) and the most messages a request held.
        self.largest_body = self.most_messages = 0
        # Calls being answered right now, and the most there were at once.
        self.in_flight = self.peak_in_flight = 0
        # Answers whose caller closed the connection before their end.
        self.hung_up = 0
        # Streams failed so far, by model name (`fail-<n>`), and requests reset (`reset-<n>`).
        self.failed: dict[str, int] = {}
        self.reset: dict[str, int] = {}
        self.limited: dict[str, int] = {}
        # The `x-request-id` of each answer, in order.
        self.request_ids: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # a long prompt is megabytes
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/stats", self.stats)
        app.on_response_prepare.append(self._name_request)
        return app

    async def _name_request(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer (whole, streamed, refused) names its request, as OpenAI's do."""
        if request.path.endswith("/chat/completions"):
            self.request_ids.append(f"req_stub_{uuid.uuid4().hex}")
            response.headers["x-request-id"] = self.request_ids[-1]

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "largest_body": self.largest_body,
                "most_messages": self.most_messages,
                "peak_in_flight": self.peak_in_flight,
                "hung_up": self.hung_up,
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        model, messages = str(body.get("model", "")), body.get("messages", [])
        self.largest_body = max(self.largest_body, len(raw))
        self.most_messages = max(self.most_messages, len(messages))
        first, between = _plan(model)
        words = _words(model, messages)
        if _counted(self.reset, _RESETS, model):
            _reset(request)
            return web.Response()  # never sent: the connection is gone
        if _counted(self.limited, _LIMITED, model):
            error = {"message": "Rate limit reached.", "type": "rate_limit_error"}
            return web.json_response({"error": error}, status=429, headers=_wait(model))
        if "not-json" in model:
            return web.Response(text="<html>not json{{", content_type="text/html")
        if "context-exceeded" in model:
            return _error_status(400)
        if "http-500-invalid-request" in model:
            error = {"message": "Something broke on our side.", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=500)
        status = _STATUS.search(model)
        if status is not None:
            return _error_status(int(status.group(1)))
        if "hang-headers" in model and not body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b" ")
            await asyncio.sleep(60)
            return response
        if not body.get("stream") or "no-choices" in model:
            thoughts = _thoughts(model)
            if not await _still_asked(request, first + between * (len(thoughts) + len(words) - 1)):
                self.hung_up += 1  # a provider stops working on an answer no one waits for
                return web.Response()  # never sent: the connection is gone
            message: dict[str, Any] = {"role": "assistant", "content": _content(model, words)}
            if "tool-calls" in model:
                message["tool_calls"] = [_TOOL_CALL]
            if thoughts:
                message["reasoning_content"] = "".join(thoughts)
            answer: dict[str, Any] = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": []
                if "no-choices" in model
                else [{"index": 0, "message": message, "finish_reason": _finish(model)}],
            }
            if "no-usage" not in model:
                answer["usage"] = _usage(model, messages, words, thoughts)
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(request, response, model, messages, words, first, between, body)
        except ConnectionError:  # the caller hung up: a provider stops too
            self.hung_up += 1
        return response

    async def _stream(
        self, request, response, model, messages, words, first, between, body
    ) -> None:
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        thoughts = _thoughts(model)
        await asyncio.sleep(first)
        if "empty-stream" in model:
            await self._send(response, chunk_id, model, None, None)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return
        for index, thought in enumerate(thoughts):
            if index:
                await asyncio.sleep(between)
            if index == 2 and "stall" in model:
                await asyncio.sleep(60)
            delta = {"content": None, "reasoning_content": thought}
            await self._send(response, chunk_id, model, delta, None)
        if self._fails(model):
            error = {"error": {"message": "The model is overloaded.", "code": 503}}
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
            await response.write_eof()
            return
        if "tool-calls" in model:
            call = {"index": 0, **_TOOL_CALL}
            await self._send(response, chunk_id, model, {"tool_calls": [call]}, None)
        spoken = words if _content(model, words) else []
        for index, word in enumerate(spoken):
            if index or thoughts:
                await asyncio.sleep(between)
            if index + len(thoughts) == 2 and "stall" in model:
                await asyncio.sleep(60)
            text = word if index == 0 else " " + word
            if index + len(thoughts) == 2 and "drop-mid" in model:
                _reset(request)
                return
            if index + len(thoughts) == 2 and "bad-chunk" in model:
                await response.write(b'data: {"id": "chatcmpl-broken", "choices": [{"de\n\n')
            await self._send(response, chunk_id, model, {"content": text}, None)
            if index == 0 and "early-usage" in model:
                usage = _usage(model, messages, words, thoughts)
                await self._send(response, chunk_id, model, None, None, usage)
        if "unfinished" in model:
            await response.write_eof()
            return
        await self._send(response, chunk_id, model, {}, _finish(model))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and "no-usage" not in model and "early-usage" not in model:
            await self._send(
                response, chunk_id, model, None, None, _usage(model, messages, words, thoughts)
            )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    def _fails(self, model: str) -> bool:
        """Whether this stream of `model` is one that fails (`fail-<n>`)."""
        return _counted(self.failed, _FAILURES, model)

    async def _send(self, response, chunk_id, model, delta, finish, usage=None) -> None:
        chunk: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            chunk["usage"] = usage
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    # --- running it ------------------------------------------------------------------------

    def start(self) -> StubLLM:
        """Serve from a background thread; returns once it listens."""
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="stub-llm", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the stub LLM did not start")
        return self

    async def _listen(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=BACKLOG)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Answers still waiting out their delay are abandoned, not left to warn at exit.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def stub_call(stub: StubLLM, model: str, messages, *, agent_key: str = "ada", **alias: Any):
    """An agent's call of `messages` (ChatMessages) to `stub` as `model` (the names above say
    how it answers), through litellm's OpenAI provider: the `LlmCall` a test hands the gateway.
    `alias`: the alias's other settings (`max_output_tokens`, `context_window`)."""
    from orchestration.types import AliasConfig, CallPurpose, LlmCall

    config = AliasConfig(
        alias="stubbed",
        litellm_model=f"openai/{model}",
        api_base=stub.base_url,
        api_key="stub-key",  # the stub reads no key; litellm's OpenAI provider wants one
        **alias,
    )
    return LlmCall(
        alias=config, messages=tuple(messages), purpose=CallPurpose.AGENT, agent_key=agent_key
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    web.run_app(
        StubLLM(args.host, args.port).app(),
        host=args.host,
        port=args.port,
        backlog=BACKLOG,
        print=None,
    )


if __name__ == "__main__":
    main()
