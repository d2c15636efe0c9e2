"""A source made of several tasks: a list of source data sets, each with its own label space.

    data:
      name: tasks
      target: {name: synthetic_task}            # its target and test splits are the target task
      sources:                                  # each one's source split is one source task
        - {task: same, data: {name: synthetic_task, labels: target}}
        - {task: noise, harmful: true, data: {name: synthetic_task, labels: random, stream: 1}}

The source sets are concatenated. Each example gets a ``task`` meta column, its labels are
shifted into its task's slice of one concatenated label space (so the model's one source
head, masked per task, is one head per task), and ``harmful`` records the config's ground
truth for the metrics. Every sub-data set is built with the run's seed, so sets that derive
shared structure from the seed (the synthetic ones) agree on it.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from reweight.core import plugins
from reweight.core.data import BilevelData, SourceTask, Split
from reweight.core.errors import DataError, validation_message
from reweight.core.plugins import ByName, describe

NESTED_ERROR = "nested_options"  # reweight.experiment.config reads its ``loc`` to report the full field path


class DatasetRef(BaseModel):
    """A registered data set, written ``{name: ..., **options}``, its options validated by its plugin."""

    model_config = ConfigDict(extra="allow")
    name: str
    _options: BaseModel = PrivateAttr()

    @model_validator(mode="after")
    def _validate_options(self) -> DatasetRef:
        try:
            component = plugins.registry().get("dataset", self.name)
        except KeyError as error:
            raise PydanticCustomError(NESTED_ERROR, "{msg}", {"loc": ("name",), "msg": error.args[0]}) from None
        try:
            self._options = plugins.validate_options(component.options, dict(self.model_extra or {}))
        except ValidationError as error:
            first = error.errors()[0]
            message = validation_message(first)
            raise PydanticCustomError(NESTED_ERROR, "{msg}", {"loc": tuple(first["loc"]), "msg": message}) from None
        except Exception as error:  # noqa: BLE001 - a plugin's validator raised something pydantic does not wrap
            message = f"the options of dataset {self.name!r} could not be checked ({describe(error)})"
            raise PydanticCustomError(NESTED_ERROR, "{msg}", {"loc": (), "msg": message}) from None
        return self

    @model_serializer
    def _dump(self) -> dict[str, Any]:
        return {"name": self.name, **self._options.model_dump(mode="json")}

    def build(self, seed: int) -> BilevelData:
        return plugins.registry().get("dataset", self.name).factory(self._options, seed)


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The task's name (in metrics: weight_task_<name>).")
    data: Annotated[DatasetRef, ByName] = Field(description="The data set whose source split is this task.")
    harmful: bool = Field(False, description="Ground truth for weight_harmful_auc only: is this task known to hurt?")


class TasksOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: Annotated[DatasetRef, ByName] = Field(
        description="The data set whose target and test splits define the target task."
    )
    sources: list[TaskSpec] = Field(min_length=1, description="The source tasks, one data set each.")

    @field_validator("sources")
    @classmethod
    def _distinct_names(cls, sources: list[TaskSpec]) -> list[TaskSpec]:
        names = [spec.task for spec in sources]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task names must differ; repeated: {', '.join(repeated)}")
        return sources


def concatenate(parts: list[tuple[TaskSpec, Split, int]]) -> tuple[Split, list[SourceTask]]:
    """One source split from several, labels shifted into per-task slices; meta columns that
    every part has are kept, plus ``task`` and ``harmful``."""
    tasks, offset = [], 0
    for spec, _, classes in parts:
        tasks.append(SourceTask(spec.task, classes, offset))
        offset += classes
    splits = [split for _, split, _ in parts]
    shared = set.intersection(*(set(split.meta) for split in splits)) - {"task", "harmful"}
    meta = {name: torch.cat([split.meta[name] for split in splits]) for name in sorted(shared)}
    meta["task"] = torch.cat([torch.full((len(s),), k, dtype=torch.long) for k, s in enumerate(splits)])
    meta["harmful"] = torch.cat([torch.full((len(s),), spec.harmful) for (spec, s, _) in parts])
    x = torch.cat([split.x for split in splits])
    y = torch.cat([split.y + task.offset for split, task in zip(splits, tasks)])
    return Split(x, y, meta, {"task": [task.name for task in tasks]}), tasks


def build_tasks(options: TasksOptions, seed: int) -> BilevelData:
    main = options.target.build(seed)
    parts = []
    for position, spec in enumerate(options.sources):
        part = spec.data.build(seed)
        where = f"data.sources.{position}"
        if part.source_tasks:
            raise DataError(f"{where}.data: a source task cannot itself be made of tasks")
        if part.source.x.shape[1:] != main.target.x.shape[1:]:
            raise DataError(
                f"{where}.data: inputs of shape {tuple(part.source.x.shape[1:])}, but the target's are "
                f"{tuple(main.target.x.shape[1:])}; all tasks share one representation"
            )
        parts.append((spec, part.source, part.source_classes))
    source, tasks = concatenate(parts)
    return BilevelData(
        source=source,
        target=main.target,
        test=main.test,
        source_classes=sum(task.classes for task in tasks),
        target_classes=main.target_classes,
        source_tasks=tasks,
    )
