"""What follows a password change: the account's API token is revoked; and the API's own
password change (`POST auth/password`, `password_change`).

Django ends a user's console sessions when their password changes (the session carries a hash
of it); an API token carries nothing of the kind and never expires, so a token taken with a
leaked password outlived the change meant to lock its taker out. Django tells every entry of
AUTH_PASSWORD_VALIDATORS when a password has changed (`password_changed`, after the user is
saved with it: `set_password` then `save`, the console's password pages, `changepassword`); this
one checks nothing and revokes the token then. A login that only upgrades the stored hash is no
change, and neither is a save of other fields.

Django calls the hook at the first save after `set_password`, whatever that save wrote: one
whose `update_fields` leave the password out (`login()` saving `last_login`, say) changed no
password, and the old one, still stored, would have handed out a new token at once. So the
hook revokes only if the user's row holds the new hash; if not, the hash waits on the user
object, and the save that does store it revokes the token. Django tells nobody of that save
but `post_save`, hence a receiver, the one write here that rides on a signal.

Turning password login off on the console's password page is no `set_password`: the page
revokes the token itself (`pantheon.admin`). A login that checked the old password while it
changed gets no token (`pantheon.auth_token`).

A revocation is written to the user's console history, as the users' list writes its own. The
console names who made the change (`console_operator`, bound for each console page); the
history entry of a change made elsewhere (`changepassword`, a script) names the account itself,
as Django's history must name someone, and says so.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from pantheon.exceptions import WrongCurrentPassword

# On the user object: the hash `set_password` gave it, which the save Django told the hook of
# did not store.
UNSAVED_PASSWORD = "_pantheon_unsaved_password"

# The console user whose page is being served, if any.
_operator: ContextVar = ContextVar("pantheon_console_operator", default=None)


@contextmanager
def console_operator(user) -> Iterator[None]:
    """Changes made meanwhile are `user`'s, in the history of what they change."""
    bound = _operator.set(user)
    try:
        yield
    finally:
        _operator.reset(bound)


def api_token_revoke(*, user) -> bool:
    """Delete `user`'s API token; whether they had one."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


def api_token_revoke_logged(*, user, why: str) -> bool:
    """Revoke `user`'s API token, in their console history with `why`; whether they had one."""
    operator = _operator.get()
    if operator is None:
        operator, why = user, f"{why} outside the console"
    with transaction.atomic():
        if not api_token_revoke(user=user):
            return False
        _log_token_revoked(operator=operator, user=user, why=why)
    return True


def _log_token_revoked(*, operator, user, why: str) -> None:
    LogEntry.objects.log_actions(
        user_id=operator.pk,
        queryset=[user],
        action_flag=CHANGE,
        change_message=f"Revoked the API token ({why}).",
        single_object=True,
    )


SIGNED_OUT = "signed out through the API"
ROTATED = "replaced by a new one through the API"


def api_token_sign_out(*, token: Token) -> bool:
    """`DELETE auth/token`: end the caller's own token, in its account's history. False when
    it was gone already (another request of the caller's ended or replaced it meanwhile)."""
    return _api_token_end(token=token, why=SIGNED_OUT, replace=False) is not None


def api_token_rotate(*, token: Token) -> Token | None:
    """`POST auth/token/rotate`: the caller's token is ended and a new one takes its place, in
    one transaction, in its account's history. None when the token was gone already: of two
    rotations with one token, the second finds it ended by the first and makes none, so one
    token is left, the first's."""
    return _api_token_end(token=token, why=ROTATED, replace=True)


def _api_token_end(*, token: Token, why: str, replace: bool) -> Token | None:
    user = token.user
    with transaction.atomic():
        # The account's row first, as a login locks it before it hands out the token
        # (`pantheon.auth_token`) and as a password change saves it: one at a time.
        get_user_model().objects.select_for_update().filter(pk=user.pk).values("pk").first()
        # By its key, not the account's: a token another request put in its place meanwhile
        # is not this one.
        deleted, _ = Token.objects.filter(key=token.key).delete()
        if not deleted:
            return None
        # Named by the account itself: it ended its own token.
        _log_token_revoked(operator=user, user=user, why=why)
        return Token.objects.create(user=user) if replace else token


PASSWORD_CHANGED = "the password changed"
CHANGED_THROUGH_API = "Changed the password through the API."


def password_change(*, user, current_password: str, new_password: str) -> Token:
    """`POST auth/password`: set `user`'s password to `new_password` if `current_password` is
    theirs (else WrongCurrentPassword) and Django's validators take the new one (else a
    ValidationError under `new_password`). Saving it revokes the account's API token and ends
    its console sessions, as any password change does (`RevokeApiTokenOnPasswordChange`; the
    sessions carry a hash of the password); the caller gets a new token in its place, in the
    same transaction, and the change is in the account's console history."""
    if not user.check_password(current_password):
        raise WrongCurrentPassword()
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as error:
        raise ValidationError({"new_password": error.messages}) from error
    checked = user.password
    with transaction.atomic():
        # As a login does (`pantheon.auth_token`): the row, locked, holds the hash that was
        # checked, or the password changed meanwhile and the one given is wrong now.
        stored = (
            get_user_model()
            .objects.select_for_update()
            .filter(pk=user.pk)
            .values_list("password", flat=True)
            .first()
        )
        if stored != checked:
            raise WrongCurrentPassword()
        user.set_password(new_password)
        user.save(update_fields=["password"])  # the hook revokes the token
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[user],
            action_flag=CHANGE,
            change_message=CHANGED_THROUGH_API,
            single_object=True,
        )
        return Token.objects.create(user=user)


class RevokeApiTokenOnPasswordChange:
    def validate(self, password, user=None) -> None:
        return None

    def password_changed(self, password, user=None) -> None:
        if user is None or user.pk is None:
            return
        if get_user_model().objects.filter(pk=user.pk, password=user.password).exists():
            api_token_revoke_logged(user=user, why=PASSWORD_CHANGED)
        else:
            setattr(user, UNSAVED_PASSWORD, user.password)

    def get_help_text(self) -> str:
        return (
            "Setting a password, or turning password login off, revokes the account's API "
            "token: its API clients log in again."
        )


def revoke_api_token_on_unsaved_password_stored(sender, instance, update_fields, **kwargs) -> None:
    """`post_save` of users: the save that stores a password an earlier save left out."""
    unsaved = instance.__dict__.get(UNSAVED_PASSWORD)
    if unsaved is None:
        return
    if instance.password != unsaved:
        # Reloaded, or replaced (a new `set_password` tells the hook again): nothing waits.
        del instance.__dict__[UNSAVED_PASSWORD]
    elif update_fields is None or "password" in update_fields:
        del instance.__dict__[UNSAVED_PASSWORD]
        api_token_revoke_logged(user=instance, why=PASSWORD_CHANGED)
