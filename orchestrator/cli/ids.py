"""Ids as the tables show them: a command taking a workflow, batch, task or checkpoint
id also takes its short form (the tail a table shows, or any start or end of the id),
resolved against the orchestrator's lists (`OrchestratorClient.resolve_id`).

A whole id is passed on untouched, without a call; an unknown short id exits 1 with
`NOT_FOUND`, an ambiguous one with `AMBIGUOUS_ID` naming the candidates.
"""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli.common import Options


class ShortId(click.ParamType[str, Any]):
    """A `noun`'s id, whole or short; converts to the whole id."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self.name = f"{noun} id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not text:
            self.fail("an id cannot be empty", param, ctx)
        options = ctx.find_object(Options) if ctx is not None else None
        if options is None:
            return text
        with options.client() as client:
            return client.resolve_id(self.noun, text)


WORKFLOW_ID = ShortId("workflow")
BATCH_ID = ShortId("batch")
TASK_ID = ShortId("task or workflow")
CHECKPOINT_ID = ShortId("checkpoint")
