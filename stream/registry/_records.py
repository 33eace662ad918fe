"""Registry records: what a registered scorer is, as pydantic models validated at the boundary.

A `ScorerRecord` is stored as JSON under `<prefix>registry:<experiment>:<name>` (see
`sinks.RegistryStore`). It holds every version ever registered under that name, which one is
current, whether it runs (`active`/`stopped`), how it samples and an optional hourly budget.
A version is data, never code: a code scorer is an import reference (`package.module:attr`
or a built-in name, with optional literal keyword arguments) and a judge is its
`Judge.to_spec()` dict. Nothing is pickled and no source is stored.
"""

from __future__ import annotations

import keyword
import math
import re
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scorers import ScorerDefinitionError, parse_reference
from stream._exceptions import FilterError, RegistryError
from stream.registry._filter import parse_filter

__all__ = ["BudgetConfig", "RegistryError", "SamplingConfig", "ScorerRecord", "ScorerVersion"]

_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_ARGUMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)




def utcnow() -> datetime:
    """Now, timezone-aware UTC (record timestamps)."""
    return datetime.now(UTC)


def check_identifier(value: object, what: str) -> str:
    """Return `value` if it is a valid scorer name / experiment id (it becomes part of a key).

    Raises:
        RegistryError: not a string of letters, digits, `_`, `.`, `-` (1-128, starting with a
            letter or digit).
    """
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise RegistryError(
            f"{what} {value!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def one_message(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `field: what is wrong`."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


class SamplingConfig(BaseModel):
    """Which traces a scorer sees: a rate and an optional filter (MLflow's `ScorerSamplingConfig`).

    A trace is scored iff `xxh64(trace_id) / 2**64 < sample_rate` and the filter matches it;
    see `parse_filter` for the filter syntax.

    Raises:
        pydantic.ValidationError: the rate is not a number in [0, 1] or the filter does not
            parse (the message comes from `FilterError`, with the column).

    Example:
        >>> SamplingConfig(sample_rate=0.1, filter_string="attributes.status = 'OK'")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: float = 1.0
    filter_string: str | None = None

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number between 0 and 1, got {value!r}")
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"must be between 0 and 1 (a fraction of traces), got {value!r}")
        return float(value)

    @field_validator("filter_string")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_filter(value)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()


def sampling_from(config: Any, base: SamplingConfig | None = None) -> SamplingConfig:
    """A `SamplingConfig` from either form: ours, or MLflow's `scorers.ScorerSamplingConfig`.

    MLflow's fields may be None; each None keeps `base`'s value (`update`), or the default
    (rate 1.0, no filter) without a base. An empty `filter_string` removes the filter.

    Raises:
        RegistryError: not a sampling config, or the rate or filter is invalid (one line).
    """
    if isinstance(config, SamplingConfig):
        return config
    if not (hasattr(config, "sample_rate") and hasattr(config, "filter_string")):
        raise RegistryError(f"sampling_config must be a ScorerSamplingConfig, got {type(config).__name__}")
    base = base or SamplingConfig()
    rate = base.sample_rate if config.sample_rate is None else config.sample_rate
    text = base.filter_string if config.filter_string is None else config.filter_string
    try:
        return SamplingConfig(sample_rate=rate, filter_string=text)
    except ValidationError as exc:
        raise RegistryError(f"sampling_config: {one_message(exc)}") from None


class BudgetConfig(BaseModel):
    """Hourly caps on a scorer's spending, enforced per worker process (see `HourlyBudget`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_calls_per_hour: int | None = Field(None, ge=1)
    max_tokens_per_hour: int | None = Field(None, ge=1)

    @property
    def is_unlimited(self) -> bool:
        """No cap set: the scorer has no budget."""
        return self.max_calls_per_hour is None and self.max_tokens_per_hour is None


class ScorerVersion(BaseModel):
    """One registered version: a code reference or a judge spec, plus who made it and when."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = Field(ge=1)
    kind: Literal["code", "judge"]
    ref: str | None = None
    arguments: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    created_at: datetime
    created_by: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ScorerVersion:
        if self.kind == "code":
            if not self.ref or self.spec is not None:
                raise ValueError("a code version needs `ref` and no `spec`")
            for key in self.arguments or {}:
                if _ARGUMENT.fullmatch(key) is None or keyword.iskeyword(key):
                    raise ValueError(f"argument name {key!r} is not an ASCII identifier")
            # Records are read back from Redis, where anyone with access can write them: the
            # reference must be in the grammar here, on every read, before anything is resolved.
            try:
                parse_reference(self.reference)
            except ScorerDefinitionError as exc:
                raise ValueError(str(exc)) from None
        elif self.spec is None or self.ref is not None or self.arguments is not None:
            raise ValueError("a judge version needs `spec` and no `ref` or `arguments`")
        return self

    @property
    def reference(self) -> str:
        """The text `resolve_scorer` takes for a code version: `ref` called with its `arguments`."""
        if self.ref is None:
            raise RegistryError(f"version {self.version} is a judge; it has no code reference")
        if not self.arguments:
            return self.ref
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.ref}({args})"

    def describe(self) -> str:
        """One line for tables: the reference, or the judge kind and model."""
        if self.kind == "code":
            return self.reference
        spec = self.spec or {}
        return f"{spec.get('kind', '?')} judge, model {spec.get('model') or 'default'}"


class ScorerRecord(BaseModel):
    """A registered scorer: its versions, the current one, its state, sampling and budget.

    Attributes mirror MLflow's registered scorer: `name`, `experiment_id`, `sample_rate` and
    `filter_string` (from `sampling`), plus `state`, `current_version` and `versions`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    experiment_id: str
    versions: list[ScorerVersion] = Field(min_length=1)
    current_version: int
    state: Literal["active", "stopped"] = "stopped"
    sampling: SamplingConfig = SamplingConfig()
    budget: BudgetConfig | None = None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _consistent(self) -> ScorerRecord:
        check_identifier(self.name, "scorer name")
        check_identifier(self.experiment_id, "experiment id")
        numbers = [v.version for v in self.versions]
        if numbers != sorted(set(numbers)):
            raise ValueError(f"versions must be unique and ascending, got {numbers}")
        if self.current_version not in numbers:
            raise ValueError(f"current_version {self.current_version} is not one of the versions {numbers}")
        return self

    @property
    def current(self) -> ScorerVersion:
        """The version the workers run."""
        return self.version(self.current_version)

    @property
    def sample_rate(self) -> float:
        return self.sampling.sample_rate

    @property
    def filter_string(self) -> str | None:
        return self.sampling.filter_string

    def version(self, number: int | None = None) -> ScorerVersion:
        """One version by number (None: the current one).

        Raises:
            RegistryError: there is no such version (the message lists the existing ones).
        """
        wanted = self.current_version if number is None else number
        for v in self.versions:
            if v.version == wanted:
                return v
        have = ", ".join(str(v.version) for v in self.versions)
        raise RegistryError(
            f"scorer {self.name!r} in experiment {self.experiment_id!r} has no version {wanted} (versions: {have})",
            scorer=self.name,
            experiment_id=self.experiment_id,
        )
