"""What management commands share."""

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


def command_error(exc: ValidationError) -> CommandError:
    """A service's ValidationError as a command's one-line error: `field: message; ...`."""
    if hasattr(exc, "error_dict"):
        problems = [f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()]
    else:
        problems = exc.messages
    return CommandError("; ".join(problems))
