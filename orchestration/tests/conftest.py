import asyncio

import pytest

from orchestration.types import AgentSpec, AliasConfig, LlmCall, LlmResult


@pytest.fixture
def ada() -> AgentSpec:
    return AgentSpec(
        key="ada",
        name="Ada",
        role_prompt="You review Python code and catch bugs before they ship.",
        model_alias="deepseek",
    )


@pytest.fixture
def bob() -> AgentSpec:
    return AgentSpec(
        key="bob",
        name="Bob",
        role_prompt="You design database schemas and plan migrations.",
        model_alias="llama",
    )


@pytest.fixture
def cleo() -> AgentSpec:
    return AgentSpec(
        key="cleo",
        name="Cleo",
        role_prompt="You write marketing copy and product announcements.",
        model_alias="qwen",
    )


@pytest.fixture
def roster(ada, bob, cleo) -> list[AgentSpec]:
    return [ada, bob, cleo]


@pytest.fixture
def deepseek() -> AliasConfig:
    return AliasConfig(alias="deepseek", litellm_model="groq/deepseek-r1-distill-llama-70b")


class Sleeps(list):
    """An injectable async sleep that records its delays instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def complete(gateway, call: LlmCall) -> LlmResult:
    """Run the async gateway's call to its end, from a plain test."""
    return asyncio.run(gateway.complete(call))
