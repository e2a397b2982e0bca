"""The API token is taken as `Authorization: Bearer <key>` as well as `Token <key>`: HTTP
clients and SDKs send Bearer unless told otherwise, and got a 401 `not_authenticated`, as if
they had sent no credentials at all (the API client author's find at stop 37)."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def client_with(authorization: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "Token"])
def test_the_token_signs_in_under_either_scheme(owner, make_agent, scheme):
    make_agent(owner, "ada")
    key = Token.objects.create(user=owner).key

    response = client_with(f"{scheme} {key}").get("/api/v1/agents")

    assert response.status_code == 200
    assert [agent["agent_key"] for agent in response.json()["results"]] == ["ada"]


def test_an_unknown_bearer_token_is_authentication_failed_and_no_credentials_still_say_token():
    unknown = client_with("Bearer " + "0" * 40).get("/api/v1/agents")
    none = APIClient().get("/api/v1/agents")

    assert unknown.status_code == 401
    assert unknown.json() == {"detail": "Invalid token.", "code": "authentication_failed"}
    assert none.status_code == 401
    assert none["WWW-Authenticate"] == "Token"


def test_another_systems_bearer_token_is_no_credential_of_ours_and_counts_as_no_failure(
    owner, settings
):
    """A JWT that a proxy or a gateway adds is not a made-up key: it is answered as no API
    token, and does not spend the address's invalid-token limit."""
    settings.PANTHEON_INVALID_TOKEN_RATE = "2/minute"
    jwt = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    answers = [client_with(jwt).get("/api/v1/agents") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [401] * 4
    assert {answer.json()["code"] for answer in answers} == {"not_authenticated"}


def test_a_bearer_token_signs_itself_out(owner):
    key = Token.objects.create(user=owner).key
    client = client_with(f"Bearer {key}")

    assert client.delete("/api/v1/auth/token").status_code == 204
    assert not Token.objects.filter(key=key).exists()
    assert client.get("/api/v1/agents").status_code == 401


def test_the_schema_says_either_prefix_is_taken(anon_client):
    schemes = anon_client.get("/api/schema/?format=json").json()["components"]["securitySchemes"]

    assert "Bearer" in schemes["tokenAuth"]["description"]
