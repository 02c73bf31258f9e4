"""The base of every settings section and descriptor: an immutable pydantic model that
refuses unknown keys (a typo in the YAML or an HMMTRADER_* variable is an error) and
infinite or NaN numbers (`inf` would switch a limit off without a word)."""

from pydantic import BaseModel, ConfigDict

# upper bounds shared by the sections: a larger time or rate is a typo or a limit that
# was meant to be switched off
DAY_S = 86_400.0
MAX_BP = 10_000.0  # 100 %


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
