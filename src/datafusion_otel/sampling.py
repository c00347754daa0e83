"""Sampling that keeps the local tables complete.

`LocalRecordingSampler` wraps any sampler and turns its DROP decisions into RECORD_ONLY: a
dropped run's spans are still recorded and reach every span processor (the
`DiagnosticsSpanProcessor` among them, so the local tables hold every run), while export
processors skip them because they are not sampled. The backend gets the sampled share.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

__all__ = ["LocalRecordingSampler", "resolve_sampler"]


class LocalRecordingSampler(Sampler):
    """Delegate to ``inner``, but record (without sampling) what ``inner`` drops.

    Args:
        inner: The sampler that decides what is exported.
    """

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Return ``inner``'s decision, with DROP replaced by RECORD_ONLY."""
        result = self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP:
            # samplers return no attributes with DROP: keep the span's own start attributes
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        """Describe the sampler, for example ``LocalRecording{TraceIdRatioBased{0.1}}``."""
        return f"LocalRecording{{{self.inner.get_description()}}}"


def _from_env() -> Sampler:
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    fixed: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
    }
    if name in fixed:
        return fixed[name]
    if name not in ("traceidratio", "parentbased_traceidratio"):
        known = sorted([*fixed, "traceidratio", "parentbased_traceidratio"])
        raise ValueError(f"OTEL_TRACES_SAMPLER must be one of {known}, got {name!r}")
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
    try:
        rate = float(raw)
    except ValueError as exc:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be a number, got {raw!r}") from exc
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG must be within [0, 1], got {rate}")
    ratio = TraceIdRatioBased(rate)
    return ratio if name == "traceidratio" else ParentBased(ratio)


def resolve_sampler(sampler: Sampler | float | None) -> LocalRecordingSampler:
    """Return the sampler to install, wrapped in `LocalRecordingSampler`.

    Args:
        sampler: A sampler; a float in [0, 1] for ``ParentBased(TraceIdRatioBased(rate))``;
            None for ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default
            ``parentbased_always_on``).

    Raises:
        ValueError: If the rate or the environment variables are invalid.
        TypeError: If ``sampler`` is neither a Sampler, a number nor None.
    """
    if isinstance(sampler, LocalRecordingSampler):
        return sampler
    if sampler is None:
        return LocalRecordingSampler(_from_env())
    if isinstance(sampler, bool) or not isinstance(sampler, (Sampler, int, float)):
        raise TypeError(f"sampler must be a Sampler or a rate, got {type(sampler).__name__}")
    if isinstance(sampler, Sampler):
        return LocalRecordingSampler(sampler)
    rate = float(sampler)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampler rate must be within [0, 1], got {rate}")
    return LocalRecordingSampler(ParentBased(TraceIdRatioBased(rate)))
