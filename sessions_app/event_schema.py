"""What a turn's Server-Sent Events hold, for the OpenAPI schema (`sessions_app.events` sends
them).

The stream's body is text (`text/event-stream`: a client reads it as a stream, not as one
JSON document: `pantheon.schema.EventStream`). Each event, its `data` line parsed as JSON, is
described by the `TurnEvent` component, which the stream's schema names in its `x-sse-event`
extension: one component per event, told apart by `event` (the discriminator), each naming its
`data`'s own component (`TurnStartedData`, `Routing`, `StepStartedData`, `StepDeltaData`,
`TurnMessage`, `Turn`, `TurnFailedData`).
"""

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from pantheon.schema import EventStream
from sessions_app.events import TURN_ENDED_ID
from sessions_app.models import TURN_MODE_CHOICES
from sessions_app.serializers import RoutingSerializer, TurnMessageSerializer, TurnSerializer


class TurnStartedDataSerializer(serializers.Serializer):
    turn_id = serializers.UUIDField()
    session_id = serializers.UUIDField()
    turn_index = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=TURN_MODE_CHOICES)

    class Meta:
        ref_name = "TurnStartedData"


class StepStartedDataSerializer(serializers.Serializer):
    sequence = serializers.IntegerField(help_text="The answer's place in the session.")
    agent_id = serializers.UUIDField(
        allow_null=True,
        help_text="The agent that answers, as its message's `agent_id` (null for an answer "
        "stored before agents' ids were kept).",
    )
    agent_key = serializers.CharField()
    agent_name = serializers.CharField()
    model_alias = serializers.CharField()

    class Meta:
        ref_name = "StepStartedData"


class StepDeltaDataSerializer(serializers.Serializer):
    sequence = serializers.IntegerField(help_text="The answer's, as in its `step_started`.")
    text = serializers.CharField(help_text="The next piece of the answer's text.")

    class Meta:
        ref_name = "StepDeltaData"


class TurnFailedDataSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="`turn_failed` (every agent failed), `turn_interrupted` (its server "
        "restarted, or it stopped making progress), `turn_conflict` (a later request took the "
        "stalled session over), `turn_cancelled` (its user cancelled it: `POST "
        "turns/{id}/cancel`), `database_unavailable` (it lost its database connection and "
        "ended interrupted: post it again) or `server_error`. A replay ends with the same code."
    )
    message = serializers.CharField()
    turn = TurnSerializer(
        allow_null=True,
        help_text="The turn, as in `turn_completed`; null when the database could not be read.",
    )

    class Meta:
        ref_name = "TurnFailedData"


# Every event, in the order a turn sends them: (its name, its component, its data, what it says).
EVENTS = [
    ("turn_started", "TurnStartedEvent", TurnStartedDataSerializer, "The turn was claimed."),
    (
        "routing",
        "RoutingEvent",
        RoutingSerializer,
        "Orchestrator mode only: the manager's choice.",
    ),
    (
        "step_started",
        "StepStartedEvent",
        StepStartedDataSerializer,
        "An agent starts answering.",
    ),
    (
        "step_delta",
        "StepDeltaEvent",
        StepDeltaDataSerializer,
        "The next piece of that answer's text (a replay sends a step's stored text in deltas "
        "of at most 1,024 characters, and a resumed one the rest of the delta it broke off "
        "in).",
    ),
    (
        "step_completed",
        "StepCompletedEvent",
        TurnMessageSerializer,
        "The stored answer: its whole `content`, and `status` `error` with an `error_code` when "
        "its call failed.",
    ),
    (
        "turn_completed",
        "TurnCompletedEvent",
        TurnSerializer,
        "Last event of a `completed` or `partial` turn: the turn, as the JSON answer "
        "(`balance` null in `GET turns/{id}/events`; an Idempotency-Key retry's carries the "
        "first answer's, as its JSON does).",
    ),
    (
        "turn_failed",
        "TurnFailedEvent",
        TurnFailedDataSerializer,
        "Last event of a turn that did not complete.",
    ),
]
# The `event:` line's values, each with what it says (the schema's `TurnEventNameEnum`).
EVENT_NAMES = [(name, description) for name, _, _, description in EVENTS]


def _event_serializer(name: str, component: str, data, description: str):
    class Meta:
        ref_name = component

    return type(
        f"{component}Serializer",
        (serializers.Serializer,),
        {
            "__doc__": f"`{name}`: {description}",
            "__module__": __name__,
            "id": serializers.IntegerField(
                min_value=1,
                max_value=TURN_ENDED_ID,
                help_text="The `id:` line: orders the turn's events (`Last-Event-ID`); the "
                f"turn's last event has {TURN_ENDED_ID}.",
            ),
            "event": serializers.ChoiceField(choices=EVENT_NAMES, help_text="The `event:` line."),
            "data": data(help_text="The `data:` line, parsed as JSON."),
            "Meta": Meta,
        },
    )


TURN_EVENT = PolymorphicProxySerializer(
    component_name="TurnEvent",
    serializers={name: _event_serializer(name, *rest) for name, *rest in EVENTS},
    resource_type_field_name="event",
)


class ServerSentEventSerializer(serializers.Serializer):
    """One event as sent: its lines' texts (`data` is JSON: see `TurnEvent`)."""

    id = serializers.RegexField(r"^[0-9]+$", help_text="Orders the turn's events.")
    event = serializers.ChoiceField(choices=EVENT_NAMES)
    data = serializers.CharField(help_text="The event's JSON object.")

    class Meta:
        ref_name = "ServerSentEvent"


def _component(serializer) -> str:
    meta = getattr(serializer, "Meta", None)
    return getattr(meta, "ref_name", None) or serializer.__name__.removesuffix("Serializer")


TURN_EVENT_STREAM = EventStream(
    event=ServerSentEventSerializer,
    parsed=TURN_EVENT,
    description="Server-Sent Events, which a client reads as a stream: per event, an `id:`, "
    "an `event:` and one `data:` line (the event's JSON), then a blank line; while a provider "
    "thinks, `: heartbeat` comment lines. The events, in order: `turn_started`, `routing` "
    "(orchestrator mode), then per answer `step_started`, `step_delta`s and `step_completed`, "
    f"and last `turn_completed` or `turn_failed` (id {TURN_ENDED_ID}). The body is text (the "
    "first alternative); one event, its lines' texts, is a `ServerSentEvent` (the second, for "
    "tools that read an event stream's schema as one event's); an event with its `data` "
    "parsed is a `TurnEvent` (`x-sse-event`), whose `data` by `event` is: "
    + "; ".join(f"`{name}`: {_component(data)}" for name, _, data, _ in EVENTS)
    + ".",
)
