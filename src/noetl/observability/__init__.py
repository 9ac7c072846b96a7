"""Seeing what runs: run views folded from the event log (`runview`), Prometheus metrics
(`metrics`, `httpmetrics`, `workermetrics`), OpenTelemetry spans (`tracing`) and the run context
of log lines (`context`).

Importing this package imports nothing heavy: prometheus-client and OpenTelemetry are imported
only by the modules that use them, which the server and workers load when asked (`noetl run`
never does).
"""
