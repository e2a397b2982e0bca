"""The messages a due summary folds in, read by SQL compiled once per process
(`sessions_app.turns._SUMMARY_TRANSCRIPT`): the rows the queryset it is compiled from reads."""

from __future__ import annotations

import uuid

import pytest

from sessions_app.models import Message, MessageRole, MessageStatus
from sessions_app.turns import (
    _SUMMARY_TRANSCRIPT,
    HISTORY_FIELDS,
    IN_HISTORY,
    SUMMARY_TRANSCRIPT_LIMIT,
)

pytestmark = pytest.mark.django_db


def _queryset_rows(session, after: int, before: int) -> list[dict]:
    return list(
        Message.objects.filter(IN_HISTORY, session=session, sequence__gt=after, sequence__lt=before)
        .order_by("sequence")
        .values(*HISTORY_FIELDS)[: SUMMARY_TRANSCRIPT_LIMIT + 1]
    )


def _messages(session, count: int, agent_id) -> None:
    rows = []
    for sequence in range(1, count + 1):
        asked = sequence % 2 == 1
        rows.append(
            Message(
                session=session,
                sequence=sequence,
                role=MessageRole.USER if asked else MessageRole.ASSISTANT,
                content="" if sequence % 7 == 0 else f"message {sequence}",
                status=MessageStatus.ERROR if sequence % 5 == 0 else MessageStatus.OK,
                agent_key="" if asked else "ada",
                agent_name="" if asked else "Ada",
                agent_id=None if asked else agent_id,
                token_estimate=sequence,
            )
        )
    Message.objects.bulk_create(rows)


def test_the_compiled_read_reads_what_its_queryset_reads(owner, outsider, make_session):
    session, other = make_session(owner), make_session(outsider)
    agent_id = uuid.uuid4()
    _messages(session, 2 * SUMMARY_TRANSCRIPT_LIMIT, agent_id)
    _messages(other, 40, agent_id)  # another session's, never read

    for after, before in [(0, 12), (3, 9), (0, SUMMARY_TRANSCRIPT_LIMIT + 31), (20, 500), (9, 9)]:
        read = _SUMMARY_TRANSCRIPT.values(session_id=session.pk, after=after, before=before)
        assert read == _queryset_rows(session, after, before), (after, before)

    whole = _SUMMARY_TRANSCRIPT.values(session_id=str(session.pk), after=0, before=10_000)
    assert len(whole) == SUMMARY_TRANSCRIPT_LIMIT + 1  # one more than the limit, if there is one
    assert [row["sequence"] for row in whole] == sorted(row["sequence"] for row in whole)
    assert {row["agent_id"] for row in whole} == {None, agent_id}
    assert not [row for row in whole if row["sequence"] % 5 == 0 or row["sequence"] % 7 == 0]
