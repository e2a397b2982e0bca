"""The plain data the apps and the orchestration core exchange."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class AliasConfig:
    alias: str
    litellm_model: str
    api_base: str | None = None
    # Resolved from the alias's env var by the caller: orchestration never reads secrets itself.
    api_key: str | None = None
    context_window: int = 8192
    max_output_tokens: int = 1024


@dataclass(frozen=True)
class AgentSpec:
    key: str
    name: str
    role_prompt: str
    model_alias: str


@dataclass(frozen=True)
class LlmCall:
    alias: AliasConfig
    messages: tuple[ChatMessage, ...]
    purpose: str  # "agent" | "routing" | "summary"
    agent_key: str | None = None


@dataclass(frozen=True)
class LlmResult:
    status: str  # "success" | "error" | "timeout" | "rate_limited"
    text: str
    input_tokens_fresh: int
    input_tokens_cached: int
    output_tokens: int
    latency_ms: int
    attempts: int
    provider: str
    provider_model: str
    error_kind: str | None = None
    error_message: str | None = None
    provider_cost_usd: Decimal | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True)
class HistoryMessage:
    role: str  # "user" | "assistant"
    content: str
    agent_key: str | None = None
    agent_name: str | None = None
    token_estimate: int | None = None
