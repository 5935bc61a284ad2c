"""Plans (plans.yaml): per-key limits and image retention."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from svckit.errors import invalid

DEFAULT_PLANS = Path(__file__).with_name("plans.yaml")
# Storage's lifecycle rules (storage.core.RETENTION_CLASSES).
RETENTION_CLASSES = ("days-7", "days-30", "days-90", "forever")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    display_name: str
    # 0: no limit.
    images_per_minute: int = Field(ge=0)
    images_per_day: int = Field(ge=0)
    max_concurrent: int = Field(ge=0)
    retention_class: str

    @model_validator(mode="after")
    def _check(self) -> Plan:
        if self.retention_class not in RETENTION_CLASSES:
            raise ValueError(f"retention_class {self.retention_class!r} is not one of {RETENTION_CLASSES}")
        return self


class PlansFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    default_plan: str
    plans: dict[str, Plan] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> PlansFile:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not a plan")
        return self


@dataclass(frozen=True)
class Limits:
    """The limits in force for one key (0: no limit)."""

    images_per_minute: int
    images_per_day: int
    max_concurrent: int


class Plans:
    def __init__(self, data: PlansFile) -> None:
        self._data = data

    @classmethod
    def load(cls, path: Path = DEFAULT_PLANS) -> Plans:
        return cls(PlansFile.model_validate(yaml.safe_load(path.read_text())))

    @property
    def default(self) -> str:
        return self._data.default_plan

    @property
    def names(self) -> list[str]:
        return list(self._data.plans)

    def get(self, name: str) -> Plan:
        plan = self._data.plans.get(name)
        if plan is None:
            raise invalid(f"Unknown plan {name!r}. Plans: {', '.join(self._data.plans)}.", "plan")
        return plan

    def limits(self, name: str, overrides: dict[str, int] | None) -> Limits:
        """The plan's limits with the key's overrides (a value of 0 lifts a limit)."""
        plan = self.get(name)
        o = overrides or {}
        return Limits(
            images_per_minute=o.get("images_per_minute", plan.images_per_minute),
            images_per_day=o.get("images_per_day", plan.images_per_day),
            max_concurrent=o.get("max_concurrent", plan.max_concurrent),
        )
