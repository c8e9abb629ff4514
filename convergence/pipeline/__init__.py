"""Pipeline-as-config core: config models, loader, DAG, context, processor registry, executor.

No cloud imports here: adapters (BigQuery, KMS, Pub/Sub) reach processors through `RunContext.services`.
"""

from convergence.pipeline.context import PlaceholderError, RunContext
from convergence.pipeline.errors import (
    ConfigError,
    ConfigProblem,
    PermanentStepError,
    PipelineNotFound,
    StepError,
    TransientStepError,
)
from convergence.pipeline.executor import Executor, RunObserver
from convergence.pipeline.loader import PipelineLoader, PipelineRef
from convergence.pipeline.models import PipelineConfig, StepConfig
from convergence.pipeline.registry import ProcessorRegistry
from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus, StepOutput, StepResult, StepStatus
from convergence.pipeline.services import RunServices

__all__ = [
    "ConfigError", "ConfigProblem", "ErrorInfo", "Executor", "PermanentStepError", "PipelineConfig",
    "PipelineLoader", "PipelineNotFound", "PipelineRef", "PipelineResult", "PlaceholderError",
    "ProcessorRegistry", "RunContext", "RunObserver", "RunServices", "RunStatus", "StepConfig", "StepError",
    "StepOutput", "StepResult", "StepStatus", "TransientStepError",
]
