"""How to run a plan, as opposed to what to run: one value every runner path takes."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Tuple

from bdljax.run.execution import Execution


class RunOptions(NamedTuple):
    """How to run, not what: shared by every plan.

    Attributes:
      logger: a :class:`bdljax.run.rundir.RunLogger`; every record goes to its ``metrics.jsonl``.
      log_fields: added to every record (dataset, split, method, ...).
      eval_data: ``(x, y)`` on which the predictive is scored every ``eval_every`` epochs (or chunks).
      eval_every: 0 turns periodic evaluation off.
      progress: tqdm bars.
      execution: ``None`` chooses by backend and network (:func:`bdljax.run.execution.choose`).
    """

    logger: Any = None
    log_fields: Optional[Mapping[str, Any]] = None
    eval_data: Optional[Tuple[Any, Any]] = None
    eval_every: int = 0
    progress: bool = False
    execution: Optional[Execution] = None

    def with_fields(self, **fields) -> "RunOptions":
        return self._replace(log_fields={**(self.log_fields or {}), **fields})
