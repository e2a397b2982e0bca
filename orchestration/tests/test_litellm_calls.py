"""litellm's per-call bookkeeping that `orchestration.litellm_loader` makes cheaper: the API
base noted after a call, OpenAI's parameter names looked up in a set, a stream chunk's missing
usage missed quickly. (A call through it against a provider: pantheon/tests/
test_litellm_against_stub.py.)"""

import json

import pydantic
import pytest

from orchestration.litellm_loader import _EXTRA_ATTRIBUTES, load_litellm


@pytest.mark.parametrize(
    "given",
    [
        {"model": "openai/gpt-4o-mini"},
        {"model": "openai/gpt-4o-mini", "api_base": None},
        {"api_base": "http://127.0.0.1:1/v1"},
        {"base_url": "http://127.0.0.1:2/v1"},
    ],
)
def test_the_api_base_is_noted_as_litellm_notes_it(given):
    load_litellm()
    from litellm.litellm_core_utils.llm_response_utils import get_api_base, response_metadata

    expected = get_api_base.get_api_base(model="openai/gpt-4o-mini", optional_params=dict(given))
    noted = response_metadata.get_api_base(model="openai/gpt-4o-mini", optional_params=dict(given))
    assert noted == expected


class CountedNames(list):
    """A list of names that counts how often it is searched."""

    searched = 0

    def __contains__(self, name):
        CountedNames.searched += 1
        return super().__contains__(name)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_openai_parameter_names_are_looked_up_in_a_set_with_the_same_outcome(provider):
    litellm = load_litellm()
    names = list(litellm.utils.DEFAULT_CHAT_COMPLETION_PARAM_VALUES)
    passed = {"temperature": 0.5, "max_tokens": 9, "top_k": 3, "seed": None, "user": "u"}
    sort = litellm.utils.add_provider_specific_params_to_optional_params
    CountedNames.searched = 0
    sorted_by_set = sort(
        optional_params={"max_tokens": 9},
        passed_params=dict(passed),
        custom_llm_provider=provider,
        openai_params=CountedNames(names),
    )
    assert CountedNames.searched == 0
    if provider == "openai":
        assert sorted_by_set == {"max_tokens": 9, "extra_body": {"top_k": 3}}
    else:
        assert sorted_by_set == {"max_tokens": 9, "top_k": 3}


@pytest.mark.parametrize(
    ("class_name", "name"), [("ModelResponseStream", "usage"), ("ModelResponseStream", "citations")]
)
def test_a_missing_extra_attribute_is_missed_without_pydantics_walk(class_name, name, monkeypatch):
    """litellm looks for a stream chunk's `usage` five times a chunk, and all but the last
    chunk have none: each miss went through pydantic's `__getattr__`. It is answered as
    pydantic answers (the same error, the value once set) without it."""
    load_litellm()
    from litellm.types import utils as types

    walked: list[str] = []
    pydantics = pydantic.BaseModel.__getattr__

    def counted(self, item):
        walked.append(item)
        return pydantics(self, item)

    monkeypatch.setattr(pydantic.BaseModel, "__getattr__", counted)
    model = getattr(types, class_name)()
    with pytest.raises(AttributeError) as missed:
        getattr(model, name)
    assert str(missed.value) == f"{class_name!r} object has no attribute {name!r}"
    assert not hasattr(model, name)
    assert getattr(model, name, "none") == "none"
    setattr(model, name, "set")
    assert getattr(model, name) == "set" and hasattr(model, name)
    assert json.loads(model.model_dump_json())[name] == "set"
    assert walked == []


def test_only_litellms_extra_attributes_are_missed_quickly():
    load_litellm()
    from litellm.types import utils as types

    for class_name, names in _EXTRA_ATTRIBUTES.items():
        model = getattr(types, class_name)
        quick = getattr(vars(model).get("__getattr__"), "quick_names", frozenset())
        assert quick <= set(names)
    chunk = types.ModelResponseStream()
    with pytest.raises(AttributeError, match="no attribute 'anything_else'"):
        chunk.anything_else  # noqa: B018
