"""``CarbonTrackedOperator``: run a callable, or any existing operator, as a carbon-tracked step.

The step's record carries the task's Airflow identity (pipeline = dag_id, run_id, step =
task_id or ``task_id[map_index]``, attempt = try_number), so each retry is its own attempt and a
re-run of the same try is the same record. The metrics go to XCom under ``carbon_metrics``; the
task's own return value stays under ``return_value``, unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from carbonpipe._optional import needs_extra

with needs_extra("airflow", "Airflow operators"):
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import BaseOperator

from carbonpipe.operators.hooks import CarbonStoreHook
from carbonpipe.operators.records import RECORD_XCOM_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context

    from carbonpipe.budgets.budget import Budget
    from carbonpipe.errors import BudgetExceeded
    from carbonpipe.step import CarbonMetrics
    from carbonpipe.tracker import CarbonTracker

ON_EXCEED = ("fail", "skip")
XCOM_KEY = "carbon_metrics"


def check_on_exceed(on_exceed: str | None) -> str | None:
    """Return ``on_exceed`` if it is ``None``, ``fail`` or ``skip``; raise ``ValueError`` otherwise."""
    if on_exceed is not None and on_exceed not in ON_EXCEED:
        raise ValueError(
            f"on_exceed must be one of {', '.join(ON_EXCEED)} (or None), got {on_exceed!r}"
        )
    return on_exceed


def budget_exception(exc: BudgetExceeded, on_exceed: str | None) -> Exception:
    """Translate a refused step into Airflow's outcome: fail without retrying, or skip.

    A step refused because its budget's ledger was unavailable fails retryably instead: the
    store may be back for the next try.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

    from carbonpipe.errors import BudgetUnavailable

    action = on_exceed or exc.on_exceed
    if action == "skip":
        return AirflowSkipException(f"carbon budget: step skipped: {exc}")
    if isinstance(exc, BudgetUnavailable):
        return AirflowException(f"carbon budget: step refused: {exc}")
    return AirflowFailException(f"carbon budget: step refused: {exc}")


def _detach(operator: BaseOperator) -> None:
    """Take an operator out of the DAG it registered itself in, so that only its wrapper runs."""
    if operator.upstream_task_ids or operator.downstream_task_ids:
        raise ValueError(
            f"operator {operator.task_id!r} already has dependencies; set them on the "
            "CarbonTrackedOperator that wraps it instead"
        )
    dag = operator.get_dag()
    if dag is not None and dag.task_dict.get(operator.task_id) is operator:
        dag._remove_task(operator.task_id)


def _own_task_id(operator: BaseOperator) -> str:
    """The operator's task_id without its task group's prefix (the wrapper adds it back)."""
    group = operator.task_group
    prefix = (
        f"{group.node_id}." if group is not None and group.node_id and group.prefix_group_id else ""
    )
    task_id = operator.task_id
    return task_id[len(prefix) :] if prefix and task_id.startswith(prefix) else task_id


class CarbonTrackedOperator(PythonOperator):
    """Run a Python callable, or wrap another operator, as a carbon-tracked step.

    Give either ``python_callable`` (with ``op_args``/``op_kwargs``, templated, as for
    ``PythonOperator``) or ``operator``, an operator instance to run as it is, e.g.
    ``CarbonTrackedOperator(task_id="train", operator=BashOperator(task_id="train", ...))``.
    An operator built inside a ``with DAG(...)`` block is taken out of the DAG so it runs once,
    inside this task; its templated fields still render. Deferrable operators cannot be wrapped.

    Before the step runs, its budget (if any) is checked and the step's estimate reserved; a
    step that would overrun fails without retrying (``AirflowFailException``) or is skipped with
    its downstream tasks (``AirflowSkipException``), before it spends anything. A budget whose
    ledger cannot be read is refused the same way (failing retryably), unless it says
    ``when_unavailable="run"``: then the step runs and its record notes it ran ungated.

    :param python_callable: the callable to run (as for ``PythonOperator``).
    :param op_args: positional arguments of the callable (templated).
    :param op_kwargs: keyword arguments of the callable (templated).
    :param operator: an operator to run inside this task instead of a callable.
    :param project: project of the records (default: ``CARBONPIPE_PROJECT`` / carbon.yaml).
    :param experiment: experiment label of the records.
    :param pipeline: pipeline of the records and of ``pipeline:`` budgets (default: the dag_id).
    :param team: team of the records and of ``team:`` budgets.
    :param budget: a :class:`carbonpipe.Budget` gating the step.
    :param carbon_budget_g: shorthand for a per-run budget of this many grams.
    :param on_exceed: ``fail`` or ``skip`` when the budget refuses the step (default: the
        budget's own setting).
    :param store: the store URI, a folder, ``s3://`` or ``gs://`` (templated; default: the
        carbonpipe configuration).
    :param aws_conn_id: Airflow connection holding the credentials of an ``s3://`` store.
    :param gcp_conn_id: Airflow connection holding the credentials of a ``gs://`` store.
    :param azure_conn_id: Airflow ``wasb`` connection holding the credentials of an ``az://`` store.
    :param cloud_provider: where the task runs (``aws``, ``gcp``, ``azure``); None detects it.
    :param cloud_region: the provider's region; None detects it.
    :param country_iso_code: the country, when off-cloud.
    :param tracking_mode: ``machine``, ``process`` or ``offline``.
    :param labels: extra labels for the record (templated); Airflow's identity is added.
    :param functional_unit: SCI's functional unit of the step (``"training run"``, ``"batch
        job"``): one per run of the task, unless the callable declares its own with
        ``carbonpipe.current_step().add_units(N, NAME)``.
    :param units_from_result: take the step's units from what the task returns: a number
        (of ``functional_unit``), ``"N NAME"`` (a Bash command's last line), or a mapping
        ``{"count": N, "name": NAME}``; the record then carries its SCI.
    :param shift_within: start when the grid is cleanest within this long (``"6h"``, seconds,
        a ``timedelta``): the task waits in the triggerer (see :mod:`carbonpipe.operators.shift`).
    :param expected_duration: how long the step runs, for ``shift_within`` (default: its last
        recorded duration).
    :param intensity_source: the forecast's source (default: ``CARBONPIPE_INTENSITY_SOURCE``).
    :param intensity_zone: the grid zone (default: ``CARBONPIPE_INTENSITY_ZONE``).
    :param replan_interval_s: seconds between two readings of the forecast while waiting.
    :param wrap_pod_command: the wrapped ``KubernetesPodOperator``'s image has carbonpipe: run
        its command under ``carbonpipe run --`` so the pod measures itself and writes the
        step's one record (see :mod:`carbonpipe.operators.pods`).
    :param carbonpipe_images: image name prefixes that have carbonpipe (default:
        ``CARBONPIPE_POD_IMAGES``, comma-separated): their pods are wrapped as with
        ``wrap_pod_command=True``.
    """

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs", "store", "labels")
    template_fields_renderers = {
        "templates_dict": "json",
        "op_args": "py",
        "op_kwargs": "py",
        "labels": "json",
    }
    # The wrapped operator still points at its DAG; copying it deeply would copy the DAG too.
    shallow_copy_attrs: Sequence[str] = ("python_callable", "op_kwargs", "operator")
    ui_color = "#d5f5e3"
    # The step's record and its store, once written (for the OpenLineage facet).
    _carbon_record: dict[str, Any] | None = None
    _carbon_store_uri: str | None = None
    _carbon_inner: Any = None  # the wrapped operator's rendered copy that ran
    _carbon_pod_note: str | None = None  # why its pod was not wrapped (None: it was)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any] | None = None,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        operator: BaseOperator | None = None,
        project: str | None = None,
        experiment: str | None = None,
        pipeline: str | None = None,
        team: str | None = None,
        budget: Budget | None = None,
        carbon_budget_g: float | None = None,
        on_exceed: str | None = None,
        store: str | None = None,
        aws_conn_id: str | None = "aws_default",
        gcp_conn_id: str | None = "google_cloud_default",
        azure_conn_id: str | None = "wasb_default",
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        country_iso_code: str | None = None,
        tracking_mode: str | None = None,
        labels: Mapping[str, str] | None = None,
        functional_unit: str | None = None,
        units_from_result: bool = False,
        shift_within: Any = None,
        expected_duration: Any = None,
        intensity_source: str | None = None,
        intensity_zone: str | None = None,
        replan_interval_s: float = 900.0,
        wrap_pod_command: bool = False,
        carbonpipe_images: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if (python_callable is None) == (operator is None):
            raise TypeError(
                "CarbonTrackedOperator needs python_callable= or operator=, exactly one"
            )
        if operator is not None:
            if not isinstance(operator, BaseOperator):
                raise TypeError(
                    f"operator must be an operator instance (not mapped), got {type(operator).__name__}"
                )
            _detach(operator)
            kwargs.setdefault("task_id", _own_task_id(operator))
            kwargs.setdefault("do_xcom_push", operator.do_xcom_push)
            # PythonOperator wants a callable; it is what runs, but execute() calls it itself.
            python_callable = operator.execute
        if budget is not None and carbon_budget_g is not None:
            raise ValueError("give either budget= or carbon_budget_g=, not both")
        assert python_callable is not None
        super().__init__(
            python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs
        )
        self.operator = operator
        self.project = project
        self.experiment = experiment
        self.pipeline = pipeline
        self.team = team
        self.budget = budget
        self.carbon_budget_g = carbon_budget_g
        self.on_exceed = check_on_exceed(on_exceed)
        self.store = store
        self.aws_conn_id = aws_conn_id
        self.gcp_conn_id = gcp_conn_id
        self.azure_conn_id = azure_conn_id
        self.cloud_provider = cloud_provider
        self.cloud_region = cloud_region
        self.country_iso_code = country_iso_code
        self.tracking_mode = tracking_mode
        self.labels = dict(labels or {})
        from carbonpipe.functional_unit import tracker_unit_name

        self.functional_unit = (
            None if functional_unit is None else tracker_unit_name(functional_unit)
        )
        self.units_from_result = units_from_result
        from carbonpipe.operators.shift import check_shift

        self.shift_within_s, self.expected_duration_s = check_shift(shift_within, expected_duration)
        self.intensity_source = intensity_source
        self.intensity_zone = intensity_zone
        self.replan_interval_s = replan_interval_s
        self.wrap_pod_command = wrap_pod_command
        self.carbonpipe_images = None if carbonpipe_images is None else list(carbonpipe_images)

    # -- execution ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        shift = None
        if self.shift_within_s is not None:  # plan; defer to the trigger if the start waits
            from carbonpipe.operators.shift import plan_or_defer

            shift = plan_or_defer(
                self,
                shift_within_s=self.shift_within_s,
                expected_duration_s=self.expected_duration_s or self._last_duration(context),
                source=self.intensity_source,
                zone=self.intensity_zone,
                replan_interval_s=self.replan_interval_s,
                method_name="execute_shifted",
            )
        return self._execute_tracked(context, shift)

    def execute_shifted(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Run the step at the start the shift trigger fired for."""
        from carbonpipe.operators.shift import resumed

        shift = resumed(event, self.intensity_source, self.intensity_zone, self.log)
        return self._execute_tracked(context, shift)

    def _last_duration(self, context: Context) -> float:
        from datetime import datetime, timezone

        from carbonpipe.budgets.latest import last_run

        tracker, step, _ = self._tracker(context)
        entry = last_run(tracker.store, tracker.settings.pipeline, step, datetime.now(timezone.utc))
        if entry is None or not entry.duration_s:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"shift_within: {step} has no earlier run to take its duration from; "
                "give expected_duration= (e.g. '1h')"
            )
        return entry.duration_s

    def _execute_tracked(self, context: Context, shift: Any) -> Any:
        from carbonpipe.errors import BudgetExceeded

        tracked = self._tracker(context)
        tracker, step, attempt = tracked
        remote = why = None
        inner: Any = None
        if self.operator is not None:
            from carbonpipe.operators.pods import remote_kind

            remote = remote_kind(self.operator)
            inner = self.prepared_operator(context, tracked)
            why = self._carbon_pod_note
            if remote is not None and why is None:  # the pod writes the step's one record
                self.log.info("carbonpipe: the pod measures itself: %s", " ".join(inner.cmds))
                result = self._run_operator(context, inner)
                self._read_pod_record(context, tracker, step, attempt)
                return result
        try:
            handle = tracker.start_tracking(step, attempt=attempt)
        except BudgetExceeded as exc:
            raise budget_exception(exc, self.on_exceed) from exc
        handle.scheduling = shift
        kepler_pod = False
        if remote is not None:
            from carbonpipe.operators.pods import is_pod_operator, not_measured

            # Kepler configured: the launched pod is charged its own energy (when Kepler has it).
            kepler_pod = is_pod_operator(inner) and bool(tracker.settings.kepler_prometheus_url)
            handle.runs_elsewhere(None if kepler_pod else not_measured(remote, why or ""))
            if not kepler_pod:
                self.log.warning("carbonpipe: %s", handle.errors[-1])
        self._carbon_store_uri = tracker.store.uri
        try:
            with handle:
                if inner is not None:
                    try:
                        result = self._run_operator(context, inner)
                    finally:
                        if kepler_pod:
                            handle.kepler_pod = _launched_pod(inner)
                            if handle.kepler_pod is None:
                                handle.errors.append(
                                    not_measured(remote or "", "its pod is not known")
                                )
                else:
                    result = super().execute(context)
                if self.units_from_result:
                    from carbonpipe.functional_unit import units_of_result

                    handle.units = units_of_result(result, self.functional_unit)
        finally:
            if handle.metrics is not None:
                self._publish(context, handle.metrics)
        if handle.metrics is not None and handle.metrics.regression_failed:
            # `regression: fail` asked for it; the record is written, a retry would not help.
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"carbon regression: {handle.metrics.alerts[0].get('message')}"
            )
        return result

    def _tracker(self, context: Context) -> tuple[CarbonTracker, str, int]:
        from carbonpipe.step_identity import step_identity
        from carbonpipe.tracker import CarbonTracker

        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        identity = step_identity(
            orchestrator="airflow",
            pipeline=self.pipeline or ti.dag_id,
            run_id=ti.run_id,
            task=ti.task_id,
            attempt=ti.try_number,
            map_index=map_index,
            native={
                "dag_id": ti.dag_id,
                "run_id": ti.run_id,
                "task_id": ti.task_id,
                "map_index": map_index,
                "try_number": ti.try_number,
            },
            labels=self.labels,
        )
        hook = CarbonStoreHook(
            self.store,
            aws_conn_id=self.aws_conn_id,
            gcp_conn_id=self.gcp_conn_id,
            azure_conn_id=self.azure_conn_id,
        )
        tracker = CarbonTracker(
            project_name=self.project,
            experiment_name=self.experiment,
            output_dir=hook.get_store(),
            cloud_provider=self.cloud_provider,
            cloud_region=self.cloud_region,
            country_iso_code=self.country_iso_code,
            tracking_mode=self.tracking_mode,
            pipeline=identity.pipeline,
            team=self.team,
            run_id=identity.run_id,
            budget=self.budget,
            carbon_budget_g=self.carbon_budget_g,
            labels=identity.labels,
            functional_unit=self.functional_unit,
        )
        return tracker, identity.step, identity.attempt

    def _read_pod_record(self, context: Context, tracker: Any, step: str, attempt: int) -> None:
        """Find the record the wrapped pod wrote, for XCom and the OpenLineage facet."""
        from datetime import datetime, timedelta, timezone

        from carbonpipe.record import Record, make_record_id, record_key

        s = tracker.settings
        record_id = make_record_id(s.project, s.pipeline, tracker.run_id, step, attempt)
        today = datetime.now(timezone.utc).date()
        self._carbon_store_uri = tracker.store.uri
        for day in (today, today - timedelta(days=1)):
            try:
                raw = tracker.store.get(record_key(day.isoformat(), s.pipeline, record_id)).data
            except Exception:
                continue
            record = Record.from_json(raw).to_dict()
            self._carbon_record = record
            with contextlib.suppress(Exception):
                context["ti"].xcom_push(key=RECORD_XCOM_KEY, value=record)
            return
        self.log.warning(
            "carbonpipe: the pod's record %s is not in %s (yet)", record_id, tracker.store
        )

    def prepared_operator(
        self, context: Context, tracked: tuple[CarbonTracker, str, int] | None = None
    ) -> Any:
        """A copy of the wrapped operator, rendered and pre-executed as its task runner would.

        A ``KubernetesPodOperator`` whose image has carbonpipe (``wrap_pod_command=True`` or
        ``carbonpipe_images``) comes back with its command under ``carbonpipe run ... --`` and
        the step's ``CARBONPIPE_*`` variables; ``build_pod_request_obj(context)`` shows the pod.
        """
        from carbonpipe.operators.pods import (
            is_pod_operator,
            run_command,
            run_env,
            wrap_pod,
            wrap_wanted,
        )

        assert self.operator is not None
        inner = copy.copy(self.operator)  # rendering mutates; a retry must see the templates
        inner.render_template_fields(context)
        inner.pre_execute(context)
        self._carbon_inner = inner
        self._carbon_pod_note = ""  # not a pod: nothing to wrap
        if is_pod_operator(inner):
            if not wrap_wanted(inner, self.wrap_pod_command, self.carbonpipe_images):
                self._carbon_pod_note = (
                    "the pod's image is not known to have carbonpipe: give wrap_pod_command=True "
                    "or list it in CARBONPIPE_POD_IMAGES"
                )
                return inner
            tracker, step, attempt = tracked or self._tracker(context)
            s = tracker.settings
            identity = {
                "project": s.project,
                "experiment": s.experiment,
                "pipeline": s.pipeline,
                "team": s.team,
                "run_id": tracker.run_id,
                "step": step,
                "attempt": attempt,
            }
            location = {
                "provider": self.cloud_provider,
                "region": self.cloud_region,
                "country": self.country_iso_code,
            }
            store = tracker.store.uri
            try:
                wrap_pod(
                    inner,
                    run_command(identity, store=store, location=location, labels=tracker.labels),
                    run_env(identity, store),
                )
                self._carbon_pod_note = None
            except ValueError as exc:
                self._carbon_pod_note = str(exc)
        return inner

    def _run_operator(self, context: Context, inner: Any) -> Any:
        """Run the prepared operator as its task runner: execute, post-execute."""
        from airflow.sdk.bases.operator import ExecutorSafeguard
        from airflow.sdk.exceptions import AirflowException, TaskDeferred

        run_ctx = contextvars.copy_context()
        run_ctx.run(ExecutorSafeguard.tracker.set, inner)  # we are its task runner
        try:
            result = run_ctx.run(inner.execute, context)
        except TaskDeferred as exc:
            raise AirflowException(
                f"{type(inner).__name__} {inner.task_id!r} deferred itself; a wrapped operator "
                "must run in the worker: pass deferrable=False to it"
            ) from exc
        inner.post_execute(context, result)
        return result

    def _publish(self, context: Context, metrics: CarbonMetrics) -> None:
        """Push the metrics and the full record to XCom and log the everyday comparisons.

        The tracker itself logs the one-line summary (energy, CO2, intensity, location).
        """
        if metrics.record is not None:
            self._carbon_record = metrics.record.to_dict()
        try:
            context["ti"].xcom_push(key=XCOM_KEY, value=metrics.to_dict())
            if metrics.record is not None:
                context["ti"].xcom_push(key=RECORD_XCOM_KEY, value=metrics.record.to_dict())
        except Exception as exc:  # never let publishing change the step's outcome
            self.log.warning("carbonpipe: could not push %s to XCom: %s", XCOM_KEY, exc)
        try:
            comparisons = "; ".join(metrics.emissions_comparison().values())
            self.log.info("carbonpipe: step %s emitted as much as %s", metrics.step, comparisons)
        except Exception as exc:
            self.log.warning("carbonpipe: could not compare the step's emissions: %s", exc)

    # -- OpenLineage ----------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The ``carbon`` run facet of the step's record, on the COMPLETE event."""
        return self._lineage(task_instance, "get_openlineage_facets_on_complete")

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The ``carbon`` run facet of the failed attempt's record, on the FAIL event."""
        return self._lineage(task_instance, "get_openlineage_facets_on_failure")

    def _lineage(self, task_instance: Any, method: str) -> Any:
        from carbonpipe.operators.openlineage import FACET_NAME, CarbonRunFacet, record_of

        lineage = _operator_lineage()
        inner = self._carbon_inner or self.operator
        inner_method = getattr(inner, method, None)
        if callable(inner_method):  # the wrapped operator's own datasets and facets
            try:
                lineage = inner_method(task_instance) or lineage
            except Exception as exc:
                self.log.warning("carbonpipe: the wrapped operator's lineage failed: %s", exc)
        try:
            record = self._carbon_record or record_of(task_instance)
            if record is not None:
                facet = CarbonRunFacet.from_record(record, self._carbon_store_uri)
                lineage.run_facets = {**(lineage.run_facets or {}), FACET_NAME: facet}
        except Exception as exc:  # lineage never changes the task's outcome
            self.log.warning("carbonpipe: no carbon facet: %s", exc)
        return lineage


def _launched_pod(pod_operator: Any) -> Any:
    """The pod a ``KubernetesPodOperator`` launched, as Kepler names it (None if none)."""
    from carbonpipe.measure.kepler import Pod

    meta = getattr(getattr(pod_operator, "pod", None), "metadata", None)
    if meta is None or not meta.name:
        return None
    return Pod(namespace=meta.namespace, name=meta.name, uid=meta.uid)


def _operator_lineage() -> Any:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage()
