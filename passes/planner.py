"""The plan of a job: its passes in order, with the conversions the pipeline adds (to the form a pass needs,
and to the artifact's format at the end). Pure and torch-free: the API plans at submit, so an impossible
pipeline is refused naming its step, stores the plan with the job, and the worker runs it as stored."""

from collections.abc import Sequence

from pydantic import BaseModel, Field, computed_field

from passes.base import ArtifactFormat, Format, PassConfig, form_of
from passes.registry import AnyPassConfig, configs

START: dict[str, Format] = {
    "onnx": "onnx",
    "onnx_zip": "onnx",
    "pt2": "torch",
    "torchscript": "torch",
    "hf_folder": "torch",
    "keras": "onnx",
    "savedmodel": "onnx",
}
"""What each upload format is when the pipeline starts: a torch upload is loaded into a module, so a job
that delivers it as .pt2 or TorchScript exports it again (what is checked is what is downloaded); a
TensorFlow upload is converted to ONNX as it loads (tf2onnx, checked against TensorFlow's outputs)."""


class PlanError(ValueError):
    """A pipeline that cannot run: `index` is the spec's pass it is about."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"passes.{index}: {message}")
        self.index = index
        self.message = message


class PlannedStep(BaseModel):
    index: int = Field(description="position in the plan")
    label: str = Field(description="what progress and the report call it, e.g. `quantize static`")
    config: AnyPassConfig = Field(description="the pass config this step runs")
    spec_index: int | None = Field(description="the spec's pass this step is, or null for an automatic one")
    reason: str | None = Field(None, description="why an automatic step was added")
    gives: Format = Field(description="what the model is after this step")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def auto(self) -> bool:
        """added by the planner: a conversion the spec did not ask for"""
        return self.spec_index is None


class Plan(BaseModel):
    start: Format = Field(description="what the uploaded model is when the pipeline starts")
    steps: list[PlannedStep]
    artifact_format: ArtifactFormat


def _step(index: int, config: PassConfig, given: Format, spec_index: int | None, reason: str | None) -> PlannedStep:
    label = config.label() if spec_index is not None else f"{config.label()} (auto)"
    return PlannedStep(
        index=index, label=label, config=config, spec_index=spec_index, reason=reason, gives=config.gives(given)
    )


def _convert(to: Format) -> PassConfig:
    config: PassConfig = configs()["convert"](type="convert", to=to)
    return config


def plan(passes: Sequence[PassConfig], model_format: str) -> Plan:
    """The steps that run `passes` on a model uploaded as `model_format`."""
    steps: list[PlannedStep] = []
    current = START[model_format]
    for index, config in enumerate(passes):
        problem = config.pipeline_problem(passes[index + 1 :])
        if problem:
            raise PlanError(index, problem)
        needs = config.takes()
        if needs != "any" and form_of(current) != needs:
            steps.append(_step(len(steps), _convert(needs), current, None, f"{config.label()} works on {needs}"))
            current = steps[-1].gives
        steps.append(_step(len(steps), config, current, index, None))
        current = steps[-1].gives
    artifact: ArtifactFormat = next((f for c in reversed(passes) if (f := c.artifact_format())), "onnx")
    if current != artifact:
        steps.append(_step(len(steps), _convert(artifact), current, None, f"the job's artifact is {artifact}"))
    return Plan(start=START[model_format], steps=steps, artifact_format=artifact)
