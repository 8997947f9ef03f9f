"""Metrics sinks: each finished step's figures go to OpenTelemetry and a Prometheus Pushgateway.

:mod:`carbonpipe.exporters.registry` decides which sinks are active for this process
(:func:`~carbonpipe.exporters.registry.active_exporters`) and runs them on a record
(:func:`~carbonpipe.exporters.registry.export_record`); :mod:`.otel` and :mod:`.prometheus` are
the sinks. Nothing here is imported, and nothing is exported, unless a sink is configured.
"""
