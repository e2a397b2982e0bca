"""The plain data the apps and the orchestration core exchange (standard library only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class CallPurpose(StrEnum):
    """Why an LLM call was made; the ledger records it on every row."""

    AGENT = "agent"
    ROUTING = "routing"
    SUMMARY = "summary"
    SYNTHESIS = "synthesis"


class CallStatus(StrEnum):
    """How a call ended, as the gateway reports it (the ledger adds `pending` and `lost`)."""

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"


class ErrorKind(StrEnum):
    """What went wrong with a failed call; an answer's `error_code`."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    PROVIDER_ERROR = "provider_error"
    BAD_REQUEST = "bad_request"
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class AliasConfig:
    alias: str
    litellm_model: str
    api_base: str | None = None
    # Resolved from the alias's env var by the caller: orchestration never reads secrets itself.
    api_key: str | None = None
    # The alias's key variable when it names one that is not set: its calls are refused unsent
    # (litellm would send a key of its own finding, from another provider's variable).
    missing_key: str | None = None
    context_window: int = 8192
    max_output_tokens: int = 1024


@dataclass(frozen=True)
class AgentSpec:
    key: str
    name: str
    role_prompt: str
    model_alias: str
    # The agent's id: its key can change, and a deleted agent's key can be given to another.
    id: str | None = None


@dataclass(frozen=True)
class LlmCall:
    alias: AliasConfig
    messages: tuple[ChatMessage, ...]
    purpose: CallPurpose
    agent_key: str | None = None


@dataclass(frozen=True)
class LlmResult:
    status: CallStatus
    text: str
    input_tokens_fresh: int
    input_tokens_cached: int
    output_tokens: int
    latency_ms: int
    attempts: int
    provider: str
    provider_model: str
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    provider_cost_usd: Decimal | None = None
    # The provider's id of the call's last request (its reply's headers), None if it named none.
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == CallStatus.SUCCESS


# The lists of the summary contract, each with the label prompts give it.
SUMMARY_LISTS = (
    ("key_facts", "Key facts"),
    ("decisions", "Decisions"),
    ("open_questions", "Open questions"),
    ("action_items", "Action items"),
)


@dataclass(frozen=True)
class ConversationSummary:
    """The latest summary of a conversation: its text and its lists (`SUMMARY_LISTS`)."""

    text: str
    key_facts: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    open_questions: tuple[str, ...] = ()
    action_items: tuple[str, ...] = ()

    def lists(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(label, items) of its non-empty lists, in contract order; each item on one line."""
        labelled = []
        for field, label in SUMMARY_LISTS:
            items = tuple(" ".join(item.split()) for item in getattr(self, field))
            items = tuple(item for item in items if item)
            if items:
                labelled.append((label, items))
        return tuple(labelled)


@dataclass(frozen=True)
class HistoryMessage:
    """A message of the conversation as a prompt shows it."""

    role: Role
    content: str
    agent_key: str | None = None
    agent_name: str | None = None
    token_estimate: int | None = None
    # The id of the agent that answered; None for an answer stored before ids were kept.
    agent_id: str | None = None

    @property
    def speaker(self) -> str:
        """Who said it, as prompts and transcripts name them: "Ada @ada", "@ada", "Ada", or ""
        when unknown (the user, or an assistant without a name)."""
        if self.role != Role.ASSISTANT:
            return ""
        if self.agent_name and self.agent_key:
            return f"{self.agent_name} @{self.agent_key}"
        if self.agent_key:
            return f"@{self.agent_key}"
        return self.agent_name or ""

    def answerer_among(self, roster: Sequence[AgentSpec]) -> str:
        """Who gave this answer, as a prompt for `roster`'s room names them: the agent of
        `roster` who gave it, as it is called now ("Ada @ada": its key may have changed since);
        any other by the name it had alone, without a key (its key may be another agent's now),
        or "an agent" without one. "" for a user's message."""
        if self.role != Role.ASSISTANT:
            return ""
        agent = self.answerer_in(roster)
        if agent is not None:
            return f"{agent.name} @{agent.key}"
        return self.agent_name or "an agent"

    def answerer_in(self, roster: Sequence[AgentSpec]) -> AgentSpec | None:
        """The agent of `roster` who gave this answer (`given_by`), if any."""
        return next((agent for agent in roster if self.given_by(agent)), None)

    def given_by(self, agent: AgentSpec) -> bool:
        """Whether this is an answer `agent` gave: by the agent's id, whatever its key is now
        (a key can change, and a deleted agent's key can go to another agent); by the key
        only for an answer stored without the id."""
        if self.role != Role.ASSISTANT:
            return False
        if self.agent_id is not None and agent.id is not None:
            return self.agent_id == agent.id
        return self.agent_key == agent.key
