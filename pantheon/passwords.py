"""What follows a password change: the account's API token is revoked.

Django ends a user's console sessions when their password changes (the session carries a hash
of it); an API token carries nothing of the kind and never expires, so a token taken with a
leaked password outlived the change meant to lock its taker out. Django tells every entry of
AUTH_PASSWORD_VALIDATORS when a password has changed (`password_changed`, after the user is
saved with it: `set_password` then `save`, the console's password pages, `changepassword`); this
one checks nothing and revokes the token then. A login that only upgrades the stored hash is no
change, and neither is a save of other fields. Turning password login off on the console's
password page is no `set_password`: the page revokes the token itself (`pantheon.admin`). A
login that checked the old password while it changed gets no token (`pantheon.auth_token`).
"""

from rest_framework.authtoken.models import Token


def api_token_revoke(*, user) -> bool:
    """Delete `user`'s API token; whether they had one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


class RevokeApiTokenOnPasswordChange:
    def validate(self, password, user=None) -> None:
        return None

    def password_changed(self, password, user=None) -> None:
        if user is not None and user.pk is not None:
            api_token_revoke(user=user)

    def get_help_text(self) -> str:
        return (
            "Setting a password, or turning password login off, revokes the account's API "
            "token: its API clients log in again."
        )
