"""litellm's `acompletion` sets each call up (`completion`: its parameters, the request's
coroutine) in the event loop's default executor, a trip to a thread and back per call. Marked
with `setup_here` (the gateway marks its calls), that setup runs on the event loop's thread,
and the executor's other work still goes to its threads."""

import asyncio
import sys
import threading

import pytest

from orchestration.litellm_loader import load_litellm, setup_here


def test_a_marked_call_is_set_up_on_the_event_loop_and_nothing_else_is(monkeypatch):
    litellm = load_litellm()
    setup_threads: list[int] = []
    original = litellm.main.completion

    def completion(*args, **kwargs):
        setup_threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(litellm.main, "completion", completion)

    async def call(marked: bool) -> tuple[str, int, int]:
        request = {
            "model": "openai/stub",
            "api_key": "sk-x",
            "messages": [{"role": "user", "content": "Hello there"}],
            "mock_response": "General Kenobi",
        }
        if marked:
            with setup_here():
                response = await asyncio.wait_for(litellm.acompletion(**request), 10)
        else:
            response = await litellm.acompletion(**request)
        # What the task sends to the executor afterwards goes to a thread.
        later = await asyncio.get_running_loop().run_in_executor(None, threading.get_ident)
        return response.choices[0].message.content, threading.get_ident(), later

    text, loop_thread, later = asyncio.run(call(marked=True))
    assert text == "General Kenobi"
    assert setup_threads == [loop_thread]
    assert later != loop_thread

    setup_threads.clear()
    text, loop_thread, later = asyncio.run(call(marked=False))
    assert text == "General Kenobi"
    assert setup_threads != [loop_thread] and later != loop_thread


def _mocked_call(litellm, model: str) -> str:
    async def call() -> str:
        response = await litellm.acompletion(
            model=model,
            api_key="sk-x",
            messages=[{"role": "user", "content": "Hello there"}],
            mock_response="General Kenobi",
        )
        return response.choices[0].message.content

    return asyncio.run(call())


def test_a_models_entry_in_the_price_table_is_looked_up_once_per_process(monkeypatch):
    """litellm's check for a call bound for OpenAI's Responses API looked the model up in its
    price table twice per call (about 0.2 ms of CPU each time, more for a model the table
    lacks); the table does not change, so each model is looked up once, and a call still gets
    its answer whether the table knows its model or not."""
    litellm = load_litellm()
    looked_up: list[str] = []
    names = litellm.utils.get_potential_model_names

    def potential_model_names(model, custom_llm_provider):
        looked_up.append(model)
        return names(model, custom_llm_provider)

    monkeypatch.setattr(litellm.utils, "get_potential_model_names", potential_model_names)
    for model in ("openai/gpt-4o-mini-2024-07-18", "openai/pantheon-test-model-nobody-has"):
        assert _mocked_call(litellm, model) == "General Kenobi"
        first = len(looked_up)
        assert _mocked_call(litellm, model) == "General Kenobi"
        assert len(looked_up) == first
    info = litellm.main.get_model_info_helper(model="gpt-4o", custom_llm_provider="openai")
    info["mode"] = "changed by its caller"
    again = litellm.main.get_model_info_helper(model="gpt-4o", custom_llm_provider="openai")
    assert again["mode"] == "chat"


def test_litellms_provider_enum_iterates_as_an_enum_does():
    """litellm lists its providers' names (an enum of them) twice per call: Python's `Enum`
    walked its 166 members with a generator step and a descriptor call (Python code) each. The
    walk now runs no Python code per member, and the enum still lists the same members, in
    order, with their values."""
    load_litellm()
    from litellm.types.utils import LlmProviders

    python_calls = []

    def profile(frame, event, arg):
        if event == "call":
            python_calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        names = [provider.value for provider in LlmProviders]
    finally:
        sys.setprofile(None)
    assert "openai" in names
    assert len(python_calls) < 10, python_calls[:10]

    members = [LlmProviders[name] for name in LlmProviders.__members__]
    assert list(LlmProviders) == members
    assert [member.value for member in LlmProviders] == [str(m._value_) for m in members]
    assert LlmProviders.OPENAI.value == "openai" and LlmProviders("openai") is LlmProviders.OPENAI
    assert "openai" in [provider.value for provider in LlmProviders]
    assert len(LlmProviders) == len(members)


def test_no_success_log_task_is_scheduled_after_a_call(monkeypatch):
    """litellm scheduled a task after each call to run its async success handler, which logs
    nothing here (`_no_bookkeeping_of_its_own`): no call claims that log, so none is."""
    litellm = load_litellm()
    scheduled = []
    original = litellm.utils._client_async_logging_helper

    def helper(*args, **kwargs):
        scheduled.append(kwargs.get("logging_obj"))
        return original(*args, **kwargs)

    monkeypatch.setattr(litellm.utils, "_client_async_logging_helper", helper)
    assert _mocked_call(litellm, "openai/gpt-4o-mini") == "General Kenobi"
    assert scheduled == []


def test_litellms_provider_enum_lists_what_pythons_enum_lists():
    """The same members in the same order as `EnumType`'s own walk, aliases left out, each
    with its value."""
    load_litellm()
    from enum import EnumType

    from litellm.types.utils import LlmProviders

    assert list(LlmProviders) == list(EnumType.__iter__(LlmProviders))
    assert [provider.value for provider in LlmProviders] == [
        member._value_ for member in EnumType.__iter__(LlmProviders)
    ]
    assert LlmProviders("openai") is LlmProviders.OPENAI and len(LlmProviders) > 100


def test_a_marked_calls_setup_does_not_wake_the_event_loop_from_outside(monkeypatch):
    """The setup run in place came back as a thread's future, which the loop learns is done
    from a wake-up through its self-pipe (`call_soon_threadsafe`) and one more turn: it comes
    back done, as the loop's own future, and the call answers as before."""
    litellm = load_litellm()

    async def call() -> tuple[str, list]:
        loop = asyncio.get_running_loop()
        woken: list = []
        wake = loop.call_soon_threadsafe

        def call_soon_threadsafe(callback, *args, **kwargs):
            woken.append(callback)
            return wake(callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", call_soon_threadsafe)
        with setup_here():
            response = await asyncio.wait_for(
                litellm.acompletion(
                    model="openai/stub",
                    api_key="sk-x",
                    messages=[{"role": "user", "content": "Hello there"}],
                    mock_response="General Kenobi",
                ),
                10,
            )
        return response.choices[0].message.content, list(woken)  # before the loop shuts down

    text, woken = asyncio.run(call())
    assert text == "General Kenobi"
    assert woken == []


def test_a_marked_calls_failed_setup_raises_its_error():
    """A setup that fails (litellm refusing the call's parameters) raises its error from
    `acompletion`, as it did from the thread."""
    litellm = load_litellm()

    async def call() -> None:
        with setup_here():
            await litellm.acompletion(model="", messages=[], api_key="sk-x")

    try:
        asyncio.run(call())
    except Exception as exc:
        raised = exc
    assert isinstance(raised, litellm.BadRequestError | ValueError | TypeError), raised


def _extra_cases():
    from litellm.types import utils as types

    from orchestration.litellm_loader import _EXTRA_ATTRIBUTES

    return [
        (getattr(types, class_name), name)
        for class_name, names in _EXTRA_ATTRIBUTES.items()
        for name in names
    ]


def test_litellms_reply_objects_take_their_extra_attributes_without_pydantic_choosing_again(
    monkeypatch,
):
    """pydantic chose how to set each extra attribute of litellm's stream chunks again at every
    assignment (about 180 times a stream of 12 words). Those litellm sets are set without
    that choice (a pydantic that no longer reads the handlers remembered in its class fails
    here)."""
    import pydantic

    load_litellm()
    chosen = []
    choose = pydantic.BaseModel._setattr_handler

    def setattr_handler(self, name, value):
        chosen.append((type(self).__name__, name))
        return choose(self, name, value)

    monkeypatch.setattr(pydantic.BaseModel, "_setattr_handler", setattr_handler)
    for model, name in _extra_cases():
        instance = model()
        chosen.clear()
        setattr(instance, name, "set")
        assert chosen == [], (model.__name__, name)
        assert getattr(instance, name) == "set"


def test_an_extra_attribute_is_set_as_pydantic_itself_sets_it():
    """What the remembered handler does is what pydantic's own choice does: the value among
    the model's extra attributes, counted as set, dumped the same."""
    import pydantic

    load_litellm()
    for model, name in _extra_cases():
        quick, chosen = model(), model()
        setattr(quick, name, {"a": 1})
        # pydantic's own path, without the remembered handler.
        handler = pydantic.BaseModel._setattr_handler(chosen, name, {"a": 1})
        assert handler is None, (model.__name__, name)  # it keeps none for an extra attribute
        assert quick.__pydantic_extra__ == chosen.__pydantic_extra__, (model.__name__, name)
        assert quick.__pydantic_fields_set__ == chosen.__pydantic_fields_set__
        made = {"id", "created"}  # each instance's own
        assert quick.model_dump(exclude=made) == chosen.model_dump(exclude=made)


def test_each_provider_reads_its_own_value_from_its_own_attributes():
    """Each member of litellm's provider enum holds its value itself, read as a plain
    attribute: two members read two values, each the one Python's `Enum` gives it."""
    load_litellm()
    from enum import Enum

    from litellm.types.utils import LlmProviders

    openai, anthropic = LlmProviders.OPENAI, LlmProviders.ANTHROPIC
    assert (openai.value, anthropic.value) == ("openai", "anthropic")
    assert vars(openai)["value"] == "openai" and vars(anthropic)["value"] == "anthropic"
    assert all(
        member.value == Enum.__dict__["value"].__get__(member, LlmProviders)
        for member in LlmProviders
    )
    assert LlmProviders(anthropic.value) is anthropic


def _client_answering(headers_of_reply):
    import httpx

    sent_cookies: list[str | None] = []

    def answer(request):
        sent_cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, headers=headers_of_reply(len(sent_cookies)), json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer)), sent_cookies


def test_the_libraries_installed_are_those_the_replacements_were_read_against():
    """Skipping litellm's repetition check, or httpx's cookie read, is the library's own
    behaviour only as long as the library's method does nothing else: an upgrade is read
    again, not taken unseen."""
    from importlib.metadata import version

    from orchestration.litellm_loader import PATCHES_READ_AGAINST

    installed = {name: version(name) for name in PATCHES_READ_AGAINST}
    assert installed == PATCHES_READ_AGAINST


def test_a_reply_that_sets_no_cookie_is_not_read_for_cookies(monkeypatch):
    """httpx read every reply of litellm's client for cookies (urllib's wrappers around it,
    for `http.cookiejar`): a reply with no `Set-Cookie` header is not read, and the client's
    cookies stay as they were, sent again as before."""
    load_litellm()
    from http.cookiejar import CookieJar

    read: list[object] = []
    jar_read = CookieJar.extract_cookies

    def extract_cookies(self, response, request):
        read.append(response)
        return jar_read(self, response, request)

    monkeypatch.setattr(CookieJar, "extract_cookies", extract_cookies)

    def headers(number):
        return {"set-cookie": "session=one; Path=/"} if number == 1 else {"x-request-id": "r"}

    async def calls():
        client, sent = _client_answering(headers)
        async with client:
            for _ in range(3):
                (await client.post("http://provider.test/v1/chat/completions", json={})).json()
            return dict(client.cookies), sent

    cookies, sent = asyncio.run(calls())
    assert len(read) == 1  # the first reply's, which set a cookie
    assert cookies == {"session": "one"}
    assert sent == [None, "session=one", "session=one"]


@pytest.mark.parametrize("header", ["Set-Cookie", "set-cookie", "SET-COOKIE"])
def test_a_reply_that_sets_a_cookie_is_read_as_ever(header):
    """A reply that sets (or replaces) a cookie, however it spells the header, is read into
    the client's cookies, sent with the next request."""
    load_litellm()

    def headers(number):
        return {header: f"session=v{number}; Path=/"}

    async def calls():
        client, sent = _client_answering(headers)
        async with client:
            for _ in range(3):
                await client.post("http://provider.test/v1/chat/completions", json={})
            return dict(client.cookies), sent

    cookies, sent = asyncio.run(calls())
    assert cookies == {"session": "v3"}
    assert sent == [None, "session=v1", "session=v2"]


def _parses_counted(monkeypatch) -> list[str]:
    """Each URL httpx parses from here on, as it parses it."""
    from httpx import _urls

    parsed: list[str] = []
    parse = _urls.urlparse

    def urlparse(url="", **kwargs):
        if url:
            parsed.append(url)
        return parse(url, **kwargs)

    monkeypatch.setattr(_urls, "urlparse", urlparse)
    return parsed


def test_a_request_url_is_parsed_once_and_each_goes_where_it_says(monkeypatch):
    """httpx's async client (litellm's) parsed the same request URL on every call: each text
    is parsed once, and every request still goes to its own URL, a relative one joined to the
    client's `base_url` as before."""
    load_litellm()
    import httpx

    parsed = _parses_counted(monkeypatch)
    first = "http://127.0.0.1:9/v1/chat/completions"
    second = "http://127.0.0.1:9/other-alias/v1/chat/completions"

    async def calls():
        seen: list[str] = []
        transport = httpx.MockTransport(
            lambda request: seen.append(str(request.url)) or httpx.Response(200, json={})
        )
        async with httpx.AsyncClient(transport=transport) as client:
            for url in (first, second, first, second):
                await client.post(url, json={})
        async with httpx.AsyncClient(transport=transport, base_url="http://base.test/api") as based:
            await based.get("/v1/models")
            await based.get("v1/models", params={"limit": "2"})
        return seen

    seen = asyncio.run(calls())
    assert seen == [
        first,
        second,
        first,
        second,
        "http://base.test/api/v1/models",
        "http://base.test/api/v1/models?limit=2",
    ]
    assert parsed.count(first) == 1 and parsed.count(second) == 1


def test_the_urls_kept_parsed_are_bounded_by_their_limit(monkeypatch):
    """A process that sends to ever new URLs (an `api_base` per alias, a query that varies)
    keeps at most `PARSED_URLS_KEPT` of them parsed: past that it starts again, so the first
    one is parsed afresh, rather than every URL it ever sent to staying in memory."""
    load_litellm()
    import httpx

    from orchestration.litellm_loader import PARSED_URLS_KEPT

    parsed = _parses_counted(monkeypatch)
    urls = [f"http://127.0.0.1:9/bounded/{number}" for number in range(PARSED_URLS_KEPT + 1)]
    client = httpx.AsyncClient()
    for url in [*urls, urls[0]]:
        assert str(client.build_request("POST", url).url) == url
    assert parsed.count(urls[0]) == 2
    assert parsed.count(urls[-1]) == 1


def test_a_url_that_cannot_be_parsed_fails_each_time():
    load_litellm()
    import httpx

    async def call():
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: None)) as client:
            await client.post("http://127.0.0.1:notaport/v1/chat/completions", json={})

    for _ in range(2):
        with pytest.raises(httpx.InvalidURL):
            asyncio.run(call())
