"""Prometheus Pushgateway: each finished batch step pushes its figures, grouped by pipeline/step.

``CARBONPIPE_PUSHGATEWAY_URL`` turns it on. Each push is a fresh ``CollectorRegistry`` sent with
``pushadd_to_gateway`` (HTTP POST) under job ``carbonpipe`` and grouping key
``{pipeline, step}``: the group's carbonpipe metrics are replaced, anything else pushed to it is
kept. The Pushgateway keeps the last push of a group, so ``carbonpipe_step_energy_joules_total``
and ``carbonpipe_step_emissions_grams_total`` are the totals of the step's latest attempt (the
Pushgateway's batch-job meaning), and ``carbonpipe_step_duration_seconds`` is its duration.
"""

from __future__ import annotations

import threading

from carbonpipe._optional import needs_extra
from carbonpipe.exporters.base import attributes, figures
from carbonpipe.record import Record

JOB = "carbonpipe"


class PushgatewayExporter:
    """Pushes a finished step to the Pushgateway at ``url``, bounded by a deadline."""

    name = "Pushgateway"

    def __init__(self, url: str) -> None:
        with needs_extra("prometheus", "Pushgateway metrics"):
            import prometheus_client  # noqa: F401
        self.url = url

    def export(self, record: Record, *, timeout_s: float) -> str | None:
        """Push in a daemon thread; past ``timeout_s`` the step goes on without waiting."""
        outcome: list[str | None] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._push(record, timeout_s)),
            name="carbonpipe-pushgateway",
            daemon=True,
        )
        worker.start()
        worker.join(timeout_s)
        if outcome:
            return outcome[0]
        from carbonpipe.stores.redact import redact

        return redact(f"Pushgateway push to {self.url} gave no answer within {timeout_s:g} s")

    def _push(self, record: Record, timeout_s: float) -> str | None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, pushadd_to_gateway

            registry = CollectorRegistry()
            labels = {k.replace(".", "_"): v for k, v in attributes(record).items()}
            for key in ("pipeline", "step"):  # the grouping key carries them
                labels.pop(key, None)
            names = sorted(labels)
            energy_j, emissions_g, duration_s = figures(record)
            energy = Counter(
                "carbonpipe_step_energy_joules",
                "Energy of the step's latest attempt, joules",
                names,
                registry=registry,
            )
            emissions = Counter(
                "carbonpipe_step_emissions_grams",
                "Emissions of the step's latest attempt, grams CO2e",
                names,
                registry=registry,
            )
            duration = Gauge(
                "carbonpipe_step_duration_seconds",
                "Duration of the step's latest attempt, seconds",
                names,
                registry=registry,
            )
            # status is always there, so every metric has labels
            energy.labels(**labels).inc(max(energy_j, 0.0))
            emissions.labels(**labels).inc(max(emissions_g, 0.0))
            duration.labels(**labels).set(max(duration_s, 0.0))
            pushadd_to_gateway(
                self.url,
                job=JOB,
                registry=registry,
                grouping_key={"pipeline": record.pipeline, "step": record.step},
                timeout=timeout_s,
            )
        except Exception as exc:
            from carbonpipe.stores.redact import redact

            return redact(f"Pushgateway push to {self.url} failed: {exc}")
        return None
