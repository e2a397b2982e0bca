"""A 401 says which it is in a machine-readable `code` beside DRF's `detail` (whose text DESIGN
fixes and stays): `not_authenticated` without credentials, `authentication_failed` for a token
that is unknown, revoked or replaced, or whose user is inactive. It was `{"detail": "…"}` alone,
the one 4xx refusal a client had to tell apart by its English text."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.parametrize(
    "path", ["/api/v1/agents", "/api/v1/usage", "/api/v1/auth/token/rotate", "/api/v1/sessions"]
)
def test_no_credentials_is_not_authenticated(path):
    response = APIClient().get(path) if "rotate" not in path else APIClient().post(path)

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }


def test_an_unknown_token_is_authentication_failed():
    response = token_client("0" * 40).get("/api/v1/agents")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_a_signed_out_token_and_an_inactive_users_are_authentication_failed(owner):
    token = Token.objects.create(user=owner)
    client = token_client(token.key)
    assert client.delete("/api/v1/auth/token").status_code == 204

    after_sign_out = client.get("/api/v1/rooms")
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    inactive = token_client(Token.objects.create(user=owner).key).get("/api/v1/rooms")

    assert after_sign_out.status_code == inactive.status_code == 401
    assert after_sign_out.json() == {"detail": "Invalid token.", "code": "authentication_failed"}
    assert inactive.json() == {
        "detail": "User inactive or deleted.",
        "code": "authentication_failed",
    }


def test_a_turns_event_stream_without_credentials_says_so_too():
    response = APIClient().get(
        "/api/v1/turns/00000000-0000-0000-0000-000000000001/events",
        HTTP_ACCEPT="text/event-stream",
    )

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_the_schema_documents_the_code():
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    answer = schema["paths"]["/api/v1/agents"]["get"]["responses"]["401"]
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert component["required"] == ["code", "detail"]
    (code,) = component["properties"]["code"]["allOf"]
    assert code == {"$ref": "#/components/schemas/AuthenticationErrorCodeEnum"}
    assert schema["components"]["schemas"]["AuthenticationErrorCodeEnum"]["enum"] == [
        "not_authenticated",
        "authentication_failed",
    ]
