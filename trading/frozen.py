"""The base of every settings section and descriptor: an immutable pydantic model that
refuses unknown keys (a typo in the YAML or an HMMTRADER_* variable is an error)."""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
