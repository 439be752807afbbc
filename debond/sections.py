"""How a campaign-file section is declared: the base model and one parameter.

Every table of a campaign file is a :class:`Section`, a frozen pydantic model
that forbids unknown keys. A stage's section lives in the stage's own module
(:mod:`debond.stages`) and carries exactly the keyword names and defaults of
the stage's kernel; the other sections live in :mod:`debond.schema`.

>>> class Example(Section):
...     size: int = param(7, "Filter size.", "px", ge=1)
>>> Example().size, Example.model_fields["size"].description
(7, 'Filter size.')
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["Section", "Thresholds", "param"]


class Section(BaseModel):
    """One table of a campaign file: typed, frozen, unknown keys are errors."""

    # strict: TOML values are typed, so "3" is not an integer and 1 not a boolean
    # (an integer is still accepted where a float is expected).
    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_default=True, frozen=True
    )


def param(default: Any, help: str, unit: str = "", **constraints: Any) -> Any:
    """Declare one parameter.

    Parameters
    ----------
    default : object
        Its default; ``...`` when the key is required.
    help : str
        What it does, one sentence (shown by ``debond params`` and as a
        comment in written campaign files).
    unit : str, optional
        Its unit (``"µm"``); ``""`` when dimensionless or not a quantity.
    **constraints
        Pydantic constraints (``ge``, ``gt``, ``min_length``, …).
    """
    return Field(default, description=help, json_schema_extra={"unit": unit}, **constraints)


def _increasing(values: list[float]) -> list[float]:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"found {values}, expected strictly increasing values")
    return values


#: Thresholds between grey classes: strictly increasing.
Thresholds = Annotated[list[float], AfterValidator(_increasing)]
