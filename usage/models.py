import re
import uuid
from decimal import Decimal
from urllib.parse import parse_qsl, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from orchestration.budget import ContextBudget, smallest_window
from pantheon.fields import CONTROL_CHARACTER_MESSAGE, control_character
from pantheon.figures import plain_amount
from usage.price_rules import cached_input_refusal

# Only variables meant to hold provider keys may be named: an alias that could name any
# variable (SECRET_KEY, DATABASE_URL) and point api_base at any host would leak it.
API_KEY_ENV_PATTERN = r"^[A-Z][A-Z0-9_]*_API_KEY$"


class UsageTotals(models.Model):
    """The usage a turn or a daily rollup adds up: the sums of its ledger rows."""

    llm_calls = models.PositiveIntegerField("LLM calls", default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)  # fresh + cached
    output_tokens = models.PositiveBigIntegerField(default=0)
    credits = models.DecimalField(max_digits=24, decimal_places=10, default=Decimal("0"))
    provider_cost_usd = models.DecimalField(
        "provider cost (USD)", max_digits=20, decimal_places=10, default=Decimal("0")
    )

    class Meta:
        abstract = True


# The names of those totals, in the order the API and the admin show them.
USAGE_TOTAL_FIELDS = ("llm_calls", "input_tokens", "output_tokens", "credits", "provider_cost_usd")


# What an alias is called: a word a client types in `model_alias` (no spaces, no punctuation
# beyond . _ -).
ALIAS_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"

# The fewest prompt tokens an alias's window may leave: a role prompt and a short message.
# How a model alias's `api_base` is read where an operator types it (the console, the
# commands): a URL written without a scheme is an https one.
API_BASE_FORM_OPTIONS = {"assume_scheme": "https"}

# A query parameter of a URL that carries a credential: Azure's `api-key`, Google's `key`, an
# `access_token`, a signed URL's `sig`, Azure Functions' `code`, a password or an `auth`.
CREDENTIAL_PARAMETER = re.compile(
    r"key|token|secret|passw|^pwd$|^sig$|signature|^code$|^auth$|authoriz|credential",
    re.IGNORECASE,
)
# A path segment after which a URL carries a credential (`/key/<the key>`, `/api-token/...`).
CREDENTIAL_SEGMENT = re.compile(r"(api[-_]?)?(key|token|secret|password)s?", re.IGNORECASE)
# What a key looks like, a whole path segment or a parameter's value whatever its name: a
# provider's own prefix (OpenAI's, Anthropic's and OpenRouter's `sk-`, Groq's `gsk_`, xAI's,
# Hugging Face's, Replicate's, Perplexity's, NVIDIA's, GitHub's, GitLab's, Google's `AIza`)
# before 16 characters or more, a digit among them (the prefix with its separator, `-` or `_`,
# as every one of them but Google's writes it: an Azure deployment's name, which its owner
# chooses, may begin `sk`, `hf` or `gho`); 40 hex digits or more (a 32-digit account
# id, Cloudflare's AI gateway's, is no key); or 32 letters and digits or more with capitals,
# small letters and digits mixed, as random base64 is (a UUID or a resource's name has no
# capitals).
KEY_SHAPE = re.compile(
    r"(?:(?:sk|gsk|xai|hf|r8|pplx|nvapi|ghp|gho|github_pat|glpat)[-_]|AIza)"
    r"(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{16,}"
    r"|[0-9a-fA-F]{40,}"
    r"|(?=[^A-Z]*[A-Z])(?=[^a-z]*[a-z])(?=[^0-9]*[0-9])[A-Za-z0-9+/_=-]{32,}"
)


def credential_in_url(url: str) -> str | None:
    """Where `url` holds a credential (`user:password@`, a key in its query or its path), or
    None. Parameters are a query's, a fragment's and a path segment's (`/v1;key=...`)."""
    parts = urlsplit(url)
    try:
        if parts.username is not None or parts.password is not None:
            return "a user:password@"
    except ValueError:  # a port that is no number: the URL's own check says so
        return None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    pairs += parse_qsl(parts.fragment, keep_blank_values=True)
    path = []
    for segment in parts.path.split("/"):
        segment, _, parameters = segment.partition(";")
        pairs += parse_qsl(parameters, separator=";", keep_blank_values=True)
        path.append(unquote(segment))
    if any(CREDENTIAL_PARAMETER.search(name) or KEY_SHAPE.fullmatch(v) for name, v in pairs):
        return "a key in its query"
    named = any(CREDENTIAL_SEGMENT.fullmatch(segment) for segment in path[:-1])
    if named or any(KEY_SHAPE.fullmatch(segment) for segment in path):
        return "a key in its path"
    return None


def refuse_credentials_in_url(url: str) -> None:
    """An alias's `api_base` holds no credential: the key goes in the variable `api_key_env`
    names, which no page shows. One written in the URL (`user:password@`, `?api-key=`,
    `?code=`, `/key/...`, an `sk-...` in its path) was shown to every operator who may view
    aliases (an Analyst's list page), kept in the alias's console history, and quoted in the
    log by the provider errors that name the URL."""
    where = credential_in_url(url)
    if where is not None:
        raise ValidationError(
            f"Holds a credential ({where}): every operator who may view aliases sees this "
            "URL, and provider errors quote it. Put the key in the variable api_key_env "
            "names.",
            code="credential_in_url",
        )


MIN_INPUT_BUDGET = 512
MIN_CONTEXT_WINDOW = 1024


def refuse_control_characters(row: models.Model, *names: str) -> None:
    """A one-line text of the console (and the commands, which take texts as it does) holds no
    control character, as the API's names hold none (`pantheon.fields.control_character`)."""
    errors = {}
    for name in names:
        code_point = control_character(getattr(row, name) or "")
        if code_point is not None:
            errors[name] = CONTROL_CHARACTER_MESSAGE.format(code_point=code_point)
    if errors:
        raise ValidationError(errors)


class ModelAlias(models.Model):
    """A name agents use for a model; the operator decides which provider model it means."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    alias = models.CharField(max_length=64, unique=True)
    litellm_model = models.CharField(max_length=200)
    api_base = models.URLField(blank=True, validators=[refuse_credentials_in_url])
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        validators=[
            RegexValidator(
                API_KEY_ENV_PATTERN,
                "Name an environment variable ending in _API_KEY (e.g. OPENROUTER_API_KEY).",
            )
        ],
        help_text="Name of the environment variable holding the key (…_API_KEY).",
    )
    context_window = models.PositiveIntegerField(
        default=8192, validators=[MinValueValidator(MIN_CONTEXT_WINDOW)]
    )
    max_output_tokens = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(1)])
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.alias

    def clean(self):
        """A name clients can type and tell apart, and a window that leaves the prompt room:
        with none, every turn on the alias was refused as context_budget_exceeded ("an input
        budget of 0")."""
        super().clean()
        self._clean_name()
        refuse_control_characters(self, "litellm_model")
        window, longest = self.context_window, self.max_output_tokens
        if window is None or longest is None or window < MIN_CONTEXT_WINDOW or longest < 1:
            return  # the field errors say why (compared, a refused window said more)
        if longest >= window:
            raise ValidationError(
                {"max_output_tokens": f"Must be less than the context window ({window:,})."}
            )
        # The whole answer is kept, as every call asks the provider for it (`max_tokens`). A
        # disabled alias makes no calls: one saved before this rule can be retired as it is,
        # and is held to it when enabled again.
        budget = ContextBudget.for_window(window, longest)
        if self.enabled and budget.input_budget < MIN_INPUT_BUDGET:
            raise ValidationError(
                {
                    "context_window": (
                        f"Leaves the prompt {budget.input_budget:,} tokens once the answer "
                        f"({budget.output_reserve:,}) and the overhead "
                        f"({budget.overhead_reserve:,}) are kept: at least "
                        f"{MIN_INPUT_BUDGET:,} are needed; answers of {longest:,} tokens need a "
                        f"window of {smallest_window(longest, MIN_INPUT_BUDGET):,} or more."
                    )
                }
            )

    def _clean_name(self) -> None:
        if not self.alias:
            return  # the field's own error says so
        if not re.fullmatch(ALIAS_PATTERN, self.alias):
            raise ValidationError(
                {"alias": "Use letters, digits, '.', '_' or '-', starting with a letter or digit."}
            )
        twin = ModelAlias.objects.filter(alias__iexact=self.alias).exclude(pk=self.pk).first()
        if twin is not None:
            raise ValidationError(
                {"alias": f"{twin.alias} exists already: aliases differ by more than case."}
            )


class PricingVersion(models.Model):
    """A price list. The newest one already in effect is active; older ones keep history exact.

    Its default multiplier turns OE into credits for every alias that has no multiplier of its
    own in this list (DESIGN §3; the 0.5 floor applies either way).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    default_multiplier = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=Decimal("1.0"),
        validators=[MinValueValidator(0)],
        help_text="Credits multiplier of aliases without one of their own (floored at 0.5).",
    )
    effective_from = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-effective_from"]
        indexes = [models.Index(fields=["-effective_from"], name="pricing_effective")]
        # The newest list already in effect prices every call: two starting at one moment
        # would leave which one to the database's whim.
        constraints = [
            models.UniqueConstraint(fields=["effective_from"], name="one_price_list_per_start")
        ]

    def __str__(self) -> str:
        # Set apart from the name by a dot, not brackets: a copy's name ends in "(copy)", and
        # "2026-11 list (copy) (x1)" read as two asides to the name.
        return f"{self.name} · x{plain_amount(self.default_multiplier)}"

    def clean(self):
        super().clean()
        refuse_control_characters(self, "name")


class ModelPrice(models.Model):
    """What one alias costs in one price list: USD per million tokens, and its credits
    multiplier (empty: the list's default), so a premium model burns more credits."""

    # Indexed by model_price_unique_per_version, which it leads (pantheon/migration_indexes.py).
    pricing_version = models.ForeignKey(
        PricingVersion, on_delete=models.CASCADE, related_name="prices", db_index=False
    )
    model_alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="prices")
    credit_multiplier = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Empty: the price list's default multiplier. Floored at 0.5 either way.",
    )
    input_usd_per_mtok = models.DecimalField(
        "input (USD / M tokens)", max_digits=12, decimal_places=6, validators=[MinValueValidator(0)]
    )
    cached_input_usd_per_mtok = models.DecimalField(
        "cached input (USD / M tokens)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Empty: cached input is charged as fresh input.",
    )
    output_usd_per_mtok = models.DecimalField(
        "output (USD / M tokens)",
        max_digits=12,
        decimal_places=6,
        validators=[MinValueValidator(0)],
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["pricing_version", "model_alias"], name="model_price_unique_per_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_alias} @ {self.pricing_version}"

    def clean(self):
        super().clean()
        if refusal := cached_input_refusal(
            input_usd=self.input_usd_per_mtok, cached_input_usd=self.cached_input_usd_per_mtok
        ):
            raise ValidationError(
                {"cached_input_usd_per_mtok": f"{refusal[0].upper()}{refusal[1:]}."}
            )


class CallPurpose(models.TextChoices):
    AGENT = "agent"
    ROUTING = "routing"
    SUMMARY = "summary"
    SYNTHESIS = "synthesis"


class CallStatus(models.TextChoices):
    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    LOST = "lost"


# The error type of a call whose turn its user cancelled after the call's first words had reached
# them (a streamed answer): `error`, billed for what it streamed as a stream that failed after its
# first words is, its answer not stored (`usage.services.usage_call_bill_cancelled`).
CANCELLED_AFTER_WORDS = "cancelled"


class LlmCallEvent(models.Model):
    """One LLM call, whatever its purpose. Append-only: the ledger operators bill from."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The user, session and turn are indexed by llmcall_user_created, llmcall_session_created
    # and llmcall_turn (Meta.indexes), which they lead: an index of their own would be one more
    # to write as each call starts and ends (pantheon/migration_indexes.py).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="llm_call_events",
        db_index=False,
    )
    room = models.ForeignKey(
        "rooms.Room", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    session = models.ForeignKey(
        "sessions_app.Session",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    turn = models.ForeignKey(
        "sessions_app.Turn",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="llm_call_events",
        db_index=False,
    )
    agent_key = models.CharField(max_length=32, blank=True)
    purpose = models.CharField(max_length=16, choices=CallPurpose.choices)
    provider = models.CharField(max_length=64, blank=True)
    model_alias = models.CharField(max_length=64)
    provider_model = models.CharField(max_length=200, blank=True)
    input_tokens_fresh = models.PositiveIntegerField("fresh input tokens", default=0)
    input_tokens_cached = models.PositiveIntegerField("cached input tokens", default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    oe_tokens = models.DecimalField(
        "output-equivalent tokens",
        max_digits=20,
        decimal_places=2,
        default=Decimal("0"),
        help_text="fresh × 0.35 + cached × 0.10 + output: what credits are computed from.",
    )
    provider_cost_usd = models.DecimalField(
        "provider cost (USD)", max_digits=20, decimal_places=10, default=Decimal("0")
    )
    priced = models.BooleanField(
        default=False, help_text="False when no price was known for the model: cost is not $0."
    )
    credits = models.DecimalField(max_digits=24, decimal_places=10, default=Decimal("0"))
    latency_ms = models.PositiveIntegerField("latency (ms)", default=0)
    status = models.CharField(max_length=16, choices=CallStatus.choices)
    error_type = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=1)
    pricing_version = models.ForeignKey(
        PricingVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # The provider's id of the call's (last) request, from its reply's headers: set as the call
    # completes, once (the ledger's guard, usage/0024); None when the provider named none.
    request_id = models.CharField(max_length=100, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "ledger event"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="llmcall_user_created"),
            models.Index(fields=["session", "created_at"], name="llmcall_session_created"),
            models.Index(fields=["turn"], name="llmcall_turn"),
            models.Index(fields=["model_alias", "created_at"], name="llmcall_alias_created"),
            # The console lists the ledger newest first and reads date ranges of it (today's
            # calls on the dashboard, reconcile --since): bench/ledger.py at a million rows. The
            # id, the list's last order, lets a page deep in the list find its rows' ids from
            # the index alone (`pantheon.console.EitherEndPaginator`).
            models.Index(fields=["created_at", "id"], name="llmcall_created"),
            # The console's filters to the few rows an auditor looks into, newest first: a
            # call in flight, lost or failed; one priced by no known price (the selectors'
            # UNPRICED_CALLS); one of a turn's routing, summary or synthesis. Each scanned the
            # whole ledger (0.3-0.6 s at 700,000 rows, the sums and the list each). Partial:
            # each holds the few rows it lists, so a call costs one small index entry more (as
            # it starts, pending; no more once priced and answered: the status index). The
            # status and `priced` in a predicate make a call's completion a non-HOT update, as
            # it is anyway once the calls started meanwhile filled the row's page (a few dozen).
            models.Index(
                fields=["status", "created_at"],
                condition=~models.Q(status=CallStatus.SUCCESS),
                name="llmcall_status_created",
            ),
            models.Index(
                fields=["created_at"],
                condition=models.Q(priced=False)
                & ~models.Q(status__in=[CallStatus.PENDING, CallStatus.LOST]),
                name="llmcall_unpriced_created",
            ),
            models.Index(
                fields=["purpose", "created_at"],
                condition=~models.Q(purpose=CallPurpose.AGENT),
                name="llmcall_purpose_created",
            ),
            # The console's search by a provider's request id (what its support quotes). Not
            # unique: a provider's id is not unique across providers, and some proxies repeat
            # it on a retried call; a completion refused for it would leave its call lost.
            models.Index(
                fields=["request_id"],
                condition=models.Q(request_id__isnull=False),
                name="llmcall_request_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model_alias} {self.status} ({self.credits:.4f} cr)"


class DailyUsageRollup(UsageTotals):
    """One UTC day of one user's calls to one alias, summed from the ledger by `rollup_usage`.

    Derived data: rebuilt from the ledger at will, never edited by hand; the billing dashboard
    reads it for whole past days so it stays fast however long the ledger grows.
    """

    day = models.DateField()
    # No database constraint: every rollup sums ledger rows whose own user FK (PROTECT) already
    # holds, and checking it again for each of ~300,000 rows per rebuild cost seconds.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    model_alias = models.CharField(max_length=64)
    unpriced_calls = models.PositiveIntegerField(
        default=0, help_text="Calls recorded without a known price (their cost counts as $0)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "user", "model_alias"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user", "model_alias"], name="daily_rollup_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.user_id} {self.model_alias}"


class RollupCoverage(models.Model):
    """How far the daily rollups reach: every UTC day before `until` is in them. A day without
    calls has no rollup row, so the rows alone cannot tell a quiet day from one never rolled up
    (a nightly `rollup_usage --since` two days back, started on a ledger with history, or after
    two missed nights, left days out, and the dashboard and the ledger list read them as empty).
    One row, written by each rebuild of the rollups (`usage.rollups`); none before the first."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    until = models.DateField(help_text="The first UTC day the rollups do not hold.")
    # Moved by every rewrite of the rollups, a repair of a few days included (and always
    # forward): what the dashboard caches from them is keyed by it.
    rebuilt_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="rollup_coverage_one_row")
        ]

    def __str__(self) -> str:
        return f"rollups to {self.until} (exclusive)"


class MonthlyUsage(models.Model):
    """A user's credits and calls in one calendar month (UTC): the figure the cap applies to.

    Moved atomically with F() in the transaction of each ledger row (`usage_month_add`), so a
    turn's cap check reads one row instead of re-summing a month of ledger; `reconcile_usage`
    proves it equals the ledger and `--fix` rebuilds it from there.
    """

    # Indexed by monthly_usage_unique, which it leads.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="monthly_usage",
        db_index=False,
    )
    month = models.DateField(help_text="The first day of the month (UTC).")
    credits = models.DecimalField(max_digits=24, decimal_places=10, default=Decimal("0"))
    llm_calls = models.PositiveBigIntegerField("LLM calls", default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-month", "user"]
        verbose_name_plural = "monthly usage"
        constraints = [
            models.UniqueConstraint(fields=["user", "month"], name="monthly_usage_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}: {self.credits:.4f} credits"


# The largest monthly credit cap, and its finest part. Far above any real cap (a billion
# credits are 10^13 output-equivalent tokens a month), and every cap within them has at most
# 15 significant digits, which a double holds exactly: SQLite, the laptop default, stores a
# decimal with a fraction as one, and Django reads it back through 15 digits. A cap near
# 10^14 came back as 100000000000000.0000000000, 25 digits for the 24-digit column: every read
# of the profile failed (its pages, its user's page, each API call with the user's token).
CREDIT_CAP_MAX = Decimal(1_000_000_000)
CREDIT_CAP_PLACES = 6


def validate_credit_cap(cap: Decimal) -> None:
    """At most CREDIT_CAP_MAX credits, to at most CREDIT_CAP_PLACES decimals (trailing zeros
    aside: 12.50000000 is 12.5)."""
    if not cap.is_finite() or cap < 0:
        return  # the field's own checks refuse it
    if cap > CREDIT_CAP_MAX:
        raise ValidationError(
            "A cap is at most %(max)s credits.",
            code="max_value",
            params={"max": f"{CREDIT_CAP_MAX:,}"},
        )
    if cap != cap.quantize(Decimal(1).scaleb(-CREDIT_CAP_PLACES)):
        raise ValidationError(
            "A cap has at most %(places)s decimal places.",
            code="max_decimal_places",
            params={"places": CREDIT_CAP_PLACES},
        )


class BillingProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_profile"
    )
    monthly_credit_cap = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        null=True,
        blank=True,
        validators=[MinValueValidator(0), validate_credit_cap],
        help_text="Empty means no cap.",
    )
    is_suspended = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Billing profile of {self.user}"

    def status(self, month_credits: Decimal) -> str:
        """suspended, over cap (turns are refused once the month's credits reach the cap, as
        the turn service checks) or active, with `month_credits` used this month."""
        if self.is_suspended:
            return "suspended"
        if self.monthly_credit_cap is not None and month_credits >= self.monthly_credit_cap:
            return "over cap"
        return "active"
