"""The one door to litellm: no other module imports it.

litellm fetches its model price table from the network at import unless told to use the copy it
ships with. This module sets that before any import of litellm can happen (settings import it
first thing, so the whole process is covered). The import itself is deferred to the first
`load_litellm()`: it costs seconds, and most of the orchestration package (planning, routing,
summary, metering) never needs it; servers call it while warming up, before taking traffic.
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from enum import EnumType
from functools import cache
from types import ModuleType
from typing import Any

# Set, not defaulted: `LITELLM_LOCAL_MODEL_COST_MAP=False` in the environment would have litellm
# fetch the table as it is imported (the network, seconds, a table no one checked).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# OpenAI-compatible models through litellm's own HTTP handler (the one its other providers use)
# rather than the OpenAI SDK, whose request validation walks every message of the context
# through its typed-dict unions: about 2.5 ms less CPU per call with a 40-message context
# (bench/serving.py). Errors are mapped to the same litellm exception types either way.
os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "True")
# litellm fails a stream whose text repeats one chunk 100 times in a row (a model "looping"):
# real answers do that (a table's rules, a row of digits, a word asked for again and again), and
# the same answer not streamed went through whole. The gateway's answer limit (as many chunks
# as `max_output_tokens` allows, `orchestration.gateway.AnswerLimit`) bounds a looping stream:
# litellm's check is set out of its reach.
os.environ.setdefault("REPEATED_STREAMING_CHUNK_LIMIT", str(sys.maxsize))


def uses_openai_sdk() -> bool:
    """Whether litellm sends OpenAI-compatible calls through the OpenAI SDK (the switch above
    turned off), which loads its resources on the first call."""
    return os.environ.get("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "").lower() != "true"


# The offline demo provider's name for litellm: models "pantheon_demo/<alias>" go to it.
DEMO_PROVIDER = "pantheon_demo"


@cache
def load_litellm() -> ModuleType:
    import litellm

    # Else litellm prints four lines to standard output on each failed call (a "Give Feedback /
    # Get Help" link in terminal colours, between blank lines): plain text among the JSON log
    # lines. The error itself is logged, and in the turn's events.
    litellm.suppress_debug_info = True
    _quiet_stream_finalizer()
    _stream_reply_built_in_place()
    _extra_attributes_set_quickly()
    _send_each_request_once()
    _no_bookkeeping_of_its_own()
    _model_info_read_once()
    _provider_names_read_quickly()
    _cookies_read_only_when_set()
    _urls_parsed_once()
    _usage_found_once_per_count()
    _no_repetition_check_out_of_reach()
    _api_base_read_where_given()
    _openai_parameter_names_as_a_set()
    _extra_attributes_missed_quickly()
    return litellm


def _quiet_stream_finalizer() -> None:
    """litellm's stream wrapper sets two context variables back when it is finalized (its
    `__del__`, a best-effort restore of the request-correlation ids litellm stamps on its logs,
    which Pantheon leaves off: `request_correlation_in_logs`). A wrapper caught in a reference
    cycle (a timed-out stream's traceback holds one) is finalized by the cyclic garbage
    collector, which can run while any `ContextVar.set` allocates: that set then has the context's
    variables freed under it, and CPython up to 3.11 reads freed memory (CPython issue 148891): a
    segmentation fault. The gateway closes every stream it opens (`aclose`, which restores those
    variables in the task that read the stream), so the finalizer has nothing to restore."""
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    if "__del__" in vars(CustomStreamWrapper):
        del CustomStreamWrapper.__del__


def _stream_reply_built_in_place() -> None:
    """At a stream's end, litellm's stream wrapper builds the whole reply again from its chunks
    (`stream_chunk_builder`: the usage of the last chunk it hands on is read from that reply)
    in a worker thread (`asyncify`, anyio's), awaited before that last chunk: a trip to a
    thread and back on every stream, and the thread's wake-up of the event loop, about a sixth
    of a streamed call's CPU (bench/llm_calls.py --stream). The build takes the GIL either way,
    and the stream waits for it either way: it runs in place, in the task reading the stream,
    with the same arguments, result and errors. `asyncify` is what the stream wrapper's module
    calls for that build alone.

    Only a short stream's: the build holds the event loop while it runs, and every other answer
    streaming through the worker waits for it. A long stream's (a reasoning model's tens of
    thousands of chunks take seconds) is built in a thread as before, where the loop keeps
    turning between the build's slices of the GIL."""
    from litellm.litellm_core_utils import streaming_handler

    in_thread = getattr(streaming_handler, "asyncify", None)
    if in_thread is not None:
        streaming_handler.asyncify = _in_place_when_short(in_thread)


# The attributes litellm sets on its reply's objects that are none of their declared fields
# (pydantic keeps them as "extra"), by class: a stream of 12 words sets about 180 of them.
_EXTRA_ATTRIBUTES = {
    "StreamingChoices": ("delta", "finish_reason", "index", "logprobs", "enhancements"),
    "ModelResponseStream": ("citations", "usage"),
    "ModelResponse": ("usage",),
    "Delta": ("role",),
}


def _extra_attributes_set_quickly() -> None:
    """pydantic sets an attribute of a model through a handler it picks by the attribute's
    name, and remembers that pick in the class (`__pydantic_setattr_handlers__`), but not for
    an attribute that is none of the model's fields (an "extra" one): for those it picks again
    at each assignment (eight checks of the class, the attribute's name and the model's
    configuration), since any name at all could come. litellm's stream chunks are built so,
    a few attributes at a time (a choice of a chunk declares no field at all): about a twelfth
    of a streamed call's CPU. For the few names litellm sets, which are none of the class's
    fields or attributes, the handler pydantic would pick is picked once: it stores the value
    among the model's extra attributes and counts it as set, as pydantic does."""
    from litellm.types import utils as types

    for class_name, names in _EXTRA_ATTRIBUTES.items():
        model = getattr(types, class_name)
        for name in names:
            if _kept_as_extra(model, name):
                model.__pydantic_setattr_handlers__.setdefault(name, _set_extra)


def _kept_as_extra(model: Any, name: str) -> bool:
    """Whether pydantic's `BaseModel.__setattr__` stores `name` on a `model` among its extra
    attributes: an allowed extra, no field, no attribute of the class, nothing checked on
    assignment."""
    config = model.model_config
    return (
        not name.startswith("_")
        and name not in model.__class_vars__
        and name not in model.__pydantic_fields__
        and not hasattr(model, name)
        and config.get("extra") == "allow"
        and not config.get("frozen")
        and not config.get("validate_assignment")
    )


def _set_extra(model: Any, name: str, value: Any) -> None:
    model.__pydantic_extra__[name] = value
    model.__pydantic_fields_set__.add(name)


# The most chunks a stream's reply is rebuilt from on the event loop (a few milliseconds of
# CPU at most); a longer stream's is rebuilt in a worker thread.
BUILT_IN_PLACE_CHUNKS = 512


def _in_place_when_short(in_thread: Callable[..., Any]) -> Callable[..., Any]:
    """`asyncify` whose `asyncify(function)` calls `function` where it is awaited, not in a
    thread, when it is given at most `BUILT_IN_PLACE_CHUNKS` chunks (`chunks=`)."""

    def asyncify(function: Callable[..., Any], **options: Any) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            chunks = kwargs.get("chunks")
            if isinstance(chunks, list) and len(chunks) <= BUILT_IN_PLACE_CHUNKS:
                return function(*args, **kwargs)
            return await in_thread(function, **options)(*args, **kwargs)

        return call

    return asyncify


def _send_each_request_once() -> None:
    """litellm's HTTP handler sends a request again, at once and on a new connection, when its
    connection fails (`httpx.ConnectError`, `RemoteProtocolError`: a connection reset before the
    answer, which its aiohttp transport reports as a connect error), whatever `max_retries` and
    `num_retries` say: that second request went uncounted (the ledger's `attempts` said half
    what the provider received) and unpaced (no backoff, against a provider that had just
    dropped the connection). litellm has no setting for it, and a `client` of one's own is
    taken only by some providers' paths (the OpenAI SDK's wants another kind), so the resend is
    turned off where it happens, for every provider: the handler raises the connection's error
    instead, and the gateway retries it as any provider error, counted and after its backoff.
    `single_connection_post_request` is litellm's resend alone (POST, PATCH, DELETE call it
    from their connection-error branch, nothing else does), so nothing else changes."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    if hasattr(AsyncHTTPHandler, "single_connection_post_request"):
        AsyncHTTPHandler.single_connection_post_request = _refuse_to_resend  # type: ignore[method-assign]


def _no_bookkeeping_of_its_own() -> None:
    """litellm prices every call itself, twice (for the reply's hidden parameters, then for its
    success log, with a fallback search for a model missing from its price table, as a local
    or stubbed model is), and builds a standard logging payload for its success callbacks, on
    the event loop, after every call: about 6 % of a turn's CPU. Pantheon registers no litellm
    callback and reads none of it: the gateway prices a call once, from the same table
    (`gateway.table_cost`), and the ledger records what Pantheon metered. litellm has no switch
    for either, so both are turned off where they happen: its logging object's cost calculator
    answers "no cost", and its success handlers log nothing. Nor is its async success handler
    scheduled after each call, which took a task of its own, then another from litellm's
    logging queue, to run a handler that does nothing: litellm schedules it only for the call
    that claims its logging object's success log, and no call does any more. Its failure
    handlers, which run on errors only, are left as they are."""
    from litellm.litellm_core_utils.litellm_logging import Logging

    Logging.response_cost_calculator = _no_cost  # type: ignore[method-assign]
    Logging.success_handler = _log_nothing  # type: ignore[method-assign]
    Logging.async_success_handler = _log_nothing_async  # type: ignore[method-assign]
    Logging.claim_async_success_log = _claim_nothing  # type: ignore[method-assign]


def _model_info_read_once() -> None:
    """litellm looks a call's model up in its price table twice per call, to decide whether it
    goes to OpenAI's Responses API instead (`responses_api_bridge_check`, from `acompletion` and
    again from `completion`): about 0.2 ms of CPU each time, on the event loop, and more for a
    model missing from the table (a local or stubbed one), which it then looks for under
    generalized names before giving up. The table is litellm's own copy
    (`LITELLM_LOCAL_MODEL_COST_MAP`), read at import, and Pantheon never adds to it: a model's
    entry is the same on every call. So that check reads each (model, provider) once per
    process: the entry (a copy each time: the check may add its "mode" to it) or the fact that
    there is none (the check then goes on as it does when the lookup fails)."""
    import litellm.main

    if getattr(litellm.main.get_model_info_helper, "read_once", False):
        return
    read_once = _ModelInfoReadOnce(litellm.main.get_model_info_helper)
    litellm.main.get_model_info_helper = read_once  # type: ignore[assignment]


class _ModelInfoReadOnce:
    read_once = True

    def __init__(self, lookup: Callable[..., Any]) -> None:
        self._lookup = lookup
        self._entries: dict[tuple[str, str | None], dict[str, Any] | None] = {}

    def __call__(self, model: str, custom_llm_provider: str | None = None, **more: Any) -> Any:
        if more:  # not the bridge check's way of calling it: looked up as ever
            return self._lookup(model=model, custom_llm_provider=custom_llm_provider, **more)
        key = (model, custom_llm_provider)
        try:
            entry = self._entries[key]
        except KeyError:
            try:
                entry = self._lookup(model=model, custom_llm_provider=custom_llm_provider)
            except Exception:
                entry = None
            self._entries[key] = entry
        if entry is None:
            raise LookupError(f"litellm's price table has no entry for {model!r}")
        return dict(entry)


def _provider_names_read_quickly() -> None:
    """litellm tests a call's provider against the list of every provider's name, built afresh
    twice per call (`[provider.value for provider in LlmProviders]`, in `completion` and
    `get_optional_params`): 166 members of an enum walked by Python's `Enum` iteration, a
    generator step and a descriptor call per member, about 0.1 ms of CPU each time in Python
    3.11. The enum's members, names and values stay the same (an enum takes no members after
    its class is made); its iteration walks the same members, in the same order, from a tuple
    of them made once, and each member keeps its value as an attribute of its own, which
    `.value` reads as it reads any plain attribute (no descriptor call): about 7 us a list,
    from 15."""
    from litellm.types.utils import LlmProviders

    if isinstance(LlmProviders, _QuickEnumIteration):
        return
    members = tuple(EnumType.__iter__(LlmProviders))
    for member in members:
        vars(member)["value"] = member._value_
    LlmProviders.value = _OwnValue()  # type: ignore[assignment,method-assign]
    LlmProviders.__class__ = _QuickEnumIteration  # type: ignore[method-assign,assignment]
    _QUICK_MEMBERS[LlmProviders] = members


# Each enum made a `_QuickEnumIteration`: its members, in definition order, aliases left out.
_QUICK_MEMBERS: dict[Any, tuple[Any, ...]] = {}


class _QuickEnumIteration(EnumType):
    """Iterates an enum's members as `EnumType` does (in definition order, aliases left out),
    from a tuple of them rather than a generator."""

    def __iter__(cls) -> Iterator[Any]:
        return iter(_QUICK_MEMBERS[cls])


class _OwnValue:
    """An enum's `value` where each member holds its value in its own attributes (`vars`): a
    descriptor that defers to them (it defines no `__set__`), as Python's attribute lookup does
    for a descriptor that does not; read from the class, it is itself."""

    def __get__(self, member: Any, owner: Any = None) -> Any:
        if member is None:
            return self
        return member._value_


# The versions whose code the replacements below (`_cookies_read_only_when_set` and after) were
# read against: each stands for a library method as that version wrote it (what it reads, what
# else it does), which a behaviour test alone cannot vouch for in another version. Another one
# installed fails orchestration/tests/test_litellm_setup.py until they are read again.
PATCHES_READ_AGAINST = {"litellm": "1.106.2", "httpx": "0.28.1", "pydantic": "2.14.4"}


def _cookies_read_only_when_set() -> None:
    """httpx reads the cookies of every reply its client receives into the client's jar
    (`Cookies.extract_cookies`): it wraps the reply and its request in urllib's kinds (the
    reply's headers copied into an email message) for `http.cookiejar` to look for
    `Set-Cookie` and `Set-Cookie2` headers, about 20 us of CPU a call through litellm's client,
    for a provider's reply that sets none as a rule. A reply with neither header is left
    alone, as the jar leaves it (it returns before reading anything else: nothing is added,
    nothing removed); a reply that sets a cookie is read as ever."""
    import httpx

    if getattr(httpx.Cookies.extract_cookies, "reads_only_when_set", False):
        return
    read = httpx.Cookies.extract_cookies

    def extract_cookies(self: httpx.Cookies, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            read(self, response)

    extract_cookies.reads_only_when_set = True  # type: ignore[attr-defined]
    extract_cookies.__doc__ = read.__doc__
    httpx.Cookies.extract_cookies = extract_cookies  # type: ignore[method-assign]


def _usage_found_once_per_count() -> None:
    """At a stream's end, litellm counts its usage from its chunks (`ChunkProcessor.
    _calculate_usage_per_chunk`) and looks for each chunk's usage three times there: once for
    the counts, then once more for each of two pricing fields (`_last_provider_pricing_field`,
    "inference_geo" and "speed"). A chunk without usage (all but the last, as a rule) is
    missed through pydantic's `__getattr__` three ways a look (its attribute, `in`, its hidden
    parameters): about a twentieth of a streamed call's CPU. Nothing that count does changes a
    chunk, so within one count each chunk's usage is looked for once, and the same usage (the
    same object, or none) is found for it the second and third time."""
    from litellm.litellm_core_utils.streaming_chunk_builder_utils import ChunkProcessor

    if getattr(ChunkProcessor._calculate_usage_per_chunk, "finds_usage_once", False):
        return
    count = ChunkProcessor._calculate_usage_per_chunk

    def _calculate_usage_per_chunk(self: Any, chunks: Any) -> Any:
        extract = type(self)._extract_usage_chunk
        found: dict[int, tuple[Any, Any]] = {}

        def extract_once(chunk: Any) -> Any:
            known = found.get(id(chunk))
            if known is not None and known[0] is chunk:
                return known[1]
            usage = extract(chunk)
            found[id(chunk)] = (chunk, usage)  # the chunk held: its id stays its own
            return usage

        # An attribute of the processor's own, found before its class's static method.
        vars(self)["_extract_usage_chunk"] = extract_once
        try:
            return count(self, chunks)
        finally:
            vars(self).pop("_extract_usage_chunk", None)

    _calculate_usage_per_chunk.finds_usage_once = True  # type: ignore[attr-defined]
    ChunkProcessor._calculate_usage_per_chunk = _calculate_usage_per_chunk  # type: ignore[method-assign]


def _no_repetition_check_out_of_reach() -> None:
    """litellm's check for a stream repeating one chunk (`raise_on_model_repetition`, on every
    chunk with text: the last two chunks' texts compared, a count kept) is set out of its reach
    here (`REPEATED_STREAMING_CHUNK_LIMIT` is `sys.maxsize`, above): its count could never
    reach the limit, and nothing else reads the count. So it is not made while the limit is
    out of reach; a limit set lower (litellm's own setting) has it made on every chunk as
    before."""
    import litellm
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    check = CustomStreamWrapper.raise_on_model_repetition
    if getattr(check, "out_of_reach", False):
        return

    def raise_on_model_repetition(self: Any) -> None:
        if sys.maxsize > litellm.REPEATED_STREAMING_CHUNK_LIMIT:
            check(self)

    raise_on_model_repetition.out_of_reach = True  # type: ignore[attr-defined]
    raise_on_model_repetition.__doc__ = check.__doc__
    CustomStreamWrapper.raise_on_model_repetition = raise_on_model_repetition  # type: ignore[method-assign]


def _api_base_read_where_given() -> None:
    """After every call litellm notes the API base it called among the reply's hidden
    parameters (`ResponseMetadata.set_hidden_params`): `get_api_base` validates all the call's
    arguments (messages included) into a `LiteLLM_Params` model, about 20 us, to read back the
    `api_base` it was given, which that model keeps as it is (a text field, no validator of its
    own). A call given its API base as text (every alias of Pantheon's has one) has it read
    from its arguments; any other call goes through `get_api_base` as ever. The one difference
    is a call whose other arguments that model would refuse: litellm then notes no API base
    (None), where this notes the given one. Nothing reads that note but litellm's own logging,
    which Pantheon leaves off."""
    from litellm.litellm_core_utils.llm_response_utils import response_metadata

    look_up = response_metadata.get_api_base
    if getattr(look_up, "reads_where_given", False):
        return

    def get_api_base(model: str, optional_params: Any) -> str | None:
        if type(optional_params) is dict:
            given = optional_params.get("api_base")
            if type(given) is str:
                return given
        return look_up(model=model, optional_params=optional_params)

    get_api_base.reads_where_given = True  # type: ignore[attr-defined]
    response_metadata.get_api_base = get_api_base


def _openai_parameter_names_as_a_set() -> None:
    """litellm sorts a call's arguments into OpenAI's parameters and the rest twice per call
    (`add_provider_specific_params_to_optional_params`, from `get_optional_params` and
    `pre_process_non_default_params`), each of 40-odd arguments looked for in a list of OpenAI's
    60-odd parameter names (`list(DEFAULT_CHAT_COMPLETION_PARAM_VALUES)`, made afresh by each
    caller): a walk of that list per argument. The function reads the names only with `in`:
    it is given them as a set, which answers `in` alike for names (text) at one look."""
    from litellm import utils

    sort = utils.add_provider_specific_params_to_optional_params
    if getattr(sort, "names_as_a_set", False):
        return

    def add_provider_specific_params_to_optional_params(
        optional_params: dict,
        passed_params: dict,
        custom_llm_provider: str,
        openai_params: Any,
        additional_drop_params: Any = None,
    ) -> dict:
        if isinstance(openai_params, list):
            openai_params = frozenset(openai_params)
        return sort(
            optional_params=optional_params,
            passed_params=passed_params,
            custom_llm_provider=custom_llm_provider,
            openai_params=openai_params,
            additional_drop_params=additional_drop_params,
        )

    add_provider_specific_params_to_optional_params.names_as_a_set = True  # type: ignore[attr-defined]
    utils.add_provider_specific_params_to_optional_params = (
        add_provider_specific_params_to_optional_params
    )


def _extra_attributes_missed_quickly() -> None:
    """litellm looks for a stream chunk's `usage` five times or more per chunk (`getattr(chunk,
    "usage", None)`, `hasattr`, `"usage" in chunk`), and all but the last chunk have none: each
    look goes through pydantic's `BaseModel.__getattr__` (private attributes, extra ones, then
    the class, then the error), about a tenth of a streamed call's CPU in all. For the extra
    attributes litellm sets on its reply's objects (`_EXTRA_ATTRIBUTES`: no field, no attribute
    of the class, not private), pydantic's answer is the extra value or that error: a class of
    those gets a `__getattr__` that answers so at once for those names, with pydantic's own
    message, and defers to pydantic's for any other name. (A class whose `__getattr__` is not
    pydantic's is left as it is.)"""
    from litellm.types import utils as types
    from pydantic import BaseModel

    for class_name, names in _EXTRA_ATTRIBUTES.items():
        model = getattr(types, class_name)
        if (
            model.__getattr__ is not vars(BaseModel)["__getattr__"]
        ):  # made here already, or litellm's own
            continue
        quick = frozenset(name for name in names if _kept_as_extra(model, name))
        if quick:
            model.__getattr__ = _quick_miss(quick, model.__getattr__)


def _quick_miss(names: frozenset[str], pydantics: Callable[[Any, str], Any]) -> Any:
    def __getattr__(self: Any, item: str) -> Any:
        if item not in names:
            return pydantics(self, item)
        try:
            extra = object.__getattribute__(self, "__pydantic_extra__")
        except AttributeError:  # a model not yet initialized: pydantic's own path
            return pydantics(self, item)
        if extra and item in extra:
            return extra[item]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    __getattr__.quick_names = names  # type: ignore[attr-defined]
    return __getattr__


# The most request URLs `_urls_parsed_once` keeps parsed (it starts again past that).
PARSED_URLS_KEPT = 256


def _urls_parsed_once() -> None:
    """httpx parses the URL of each request its client sends (`_merge_url`, then `URL`: its
    parser's regular expressions and checks, about 15 us), and litellm hands its client the
    same few URLs on every call (an alias's `api_base` and the provider's path). A URL given
    as text is parsed once: the parse is immutable (httpx's `URL` copies are made from it, and
    share it), and what the client does with it (a relative URL joined to its `base_url`) is
    done as before. Text that fails to parse fails as ever, and is not kept."""
    import httpx

    if getattr(httpx.AsyncClient._merge_url, "parses_once", False):
        return
    merge = httpx.AsyncClient._merge_url
    parsed: dict[str, httpx.URL] = {}

    def _merge_url(self: Any, url: httpx.URL | str) -> httpx.URL:
        if type(url) is not str:
            return merge(self, url)
        known = parsed.get(url)
        if known is None:
            known = httpx.URL(url)
            if len(parsed) >= PARSED_URLS_KEPT:
                parsed.clear()
            parsed[url] = known
        if known.is_relative_url:
            return merge(self, known)
        return known

    _merge_url.parses_once = True  # type: ignore[attr-defined]
    httpx.AsyncClient._merge_url = _merge_url  # type: ignore[method-assign]


def _no_cost(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _log_nothing(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


async def _log_nothing_async(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _claim_nothing(self: Any) -> bool:
    return False


async def _refuse_to_resend(self: Any, *args: Any, **kwargs: Any) -> Any:
    """Raise the connection error litellm's handler caught, instead of sending again."""
    error = sys.exc_info()[1]
    if error is None:  # not called from the handler's except branch: nothing to resend after
        raise RuntimeError("litellm's resend is turned off (orchestration.litellm_loader)")
    raise error


# Set while a call's `litellm.acompletion` starts: its first trip to the default executor runs
# where it is asked (`_SetupHereExecutor`).
_SETUP_HERE: ContextVar[bool] = ContextVar("pantheon_litellm_setup_here", default=False)


class _SetupHereExecutor(ThreadPoolExecutor):
    """The event loop's default executor, which runs the setup of a litellm call in place:
    `acompletion` hands its synchronous `completion` (parameter handling, about a millisecond
    of CPU, which returns the request's coroutine) to the default executor, a trip to a
    thread and back on every call. Only the first trip of a call marked by `setup_here` runs
    in place; anything else (a DNS lookup) goes to the threads as before."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if not _SETUP_HERE.get():
            return super().submit(fn, *args, **kwargs)
        _SETUP_HERE.set(False)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            failed: Future = Future()
            failed.set_exception(exc)
            return failed
        # The event loop's own kind of future, done: `run_in_executor` hands it back as it is,
        # where it wrapped a thread's future in one of its own and had the thread's finish it
        # by waking the loop up (a byte through its self-pipe, then another turn of the loop).
        done = asyncio.get_running_loop().create_future()
        done.set_result(result)
        return done


_loops_set_up: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


@contextmanager
def setup_here() -> Iterator[None]:
    """Around the start of a `litellm.acompletion` (the task that awaits it inherits the mark):
    its setup runs on the event loop, not on a thread."""
    loop = asyncio.get_running_loop()
    if loop not in _loops_set_up:
        loop.set_default_executor(_SetupHereExecutor(thread_name_prefix="asyncio"))
        _loops_set_up.add(loop)
    token = _SETUP_HERE.set(True)
    try:
        yield
    finally:
        _SETUP_HERE.reset(token)
