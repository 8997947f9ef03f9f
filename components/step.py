"""``@carbon_component``: a lightweight KFP component whose body is a tracked carbonpipe step.

KFP ships a lightweight component as its function's *source* (``inspect.getsource``), run in the
container by ``kfp.dsl.executor_main``. So the decorator writes that source: the user's function,
renamed ``_carbonpipe_impl_<name>`` and byte for byte otherwise, is embedded as an extra
function, and a wrapper with the user's name and signature (plus ``carbon_metrics:
Output[Metrics]`` and the identity inputs) calls :func:`carbonpipe.integrations.kfp.tracked.run_tracked_step`
on it. Both live in a generated source registered with :mod:`linecache`, so ``getsource`` (KFP's
and everyone else's) reads them like any file. In the pod::

    def _carbonpipe_impl_train(data: Input[Dataset], epochs: int, model: Output[Model]) -> float:
        ...  # the user's body, unchanged

    def train(*, data: Input[Dataset], epochs: int, model: Output[Model],
              carbon_metrics: Output[Metrics], carbon_store: str = '', ...) -> float:
        from carbonpipe.integrations.kfp.tracked import run_tracked_step
        return run_tracked_step(_carbonpipe_impl_train, {...}, config={...}, ...)

The wrapper's parameters are keyword-only so that the added ones may follow the user's
defaults; KFP passes every argument by name. On this side, the wrapper calls the user's original
function, so ``component.python_func`` still runs locally.
"""

from __future__ import annotations
import __future__

import ast
import hashlib
import inspect
import linecache
import re
import types
from collections.abc import Callable, Mapping
from typing import Any

from carbonpipe import __version__
from carbonpipe.integrations.kfp.context import (
    IDENTITY_INPUTS,
    METRICS_OUTPUT,
    RECORD_OUTPUT,
    step_config,
)

from ._image import component_image, is_carbonpipe_image

IMPL_PREFIX = "_carbonpipe_impl_"

# What KFP puts in the spec for the inputs and output the decorator adds.
ADDED_DOCS: dict[str, str] = {
    METRICS_OUTPUT: "This step's carbon footprint, measured by carbonpipe: energy_kwh, "
    "emissions_g_co2e, emissions_kg_co2e, intensity_g_per_kwh, duration_s and, when the step "
    "has a budget, budget_percent.",
    RECORD_OUTPUT: "This step's full carbonpipe record (JSON), a copy KFP keeps in the pipeline "
    "root for when the store was down and the pod's spool went with the pod: "
    "`carbonpipe flush --from <pipeline root>` delivers it once.",
    "carbon_store": "Where the step's carbon record goes: a folder, s3://bucket/prefix or "
    "gs://bucket/prefix. Empty: the component's store, else CARBONPIPE_STORE.",
    "carbon_pipeline": "Pipeline the record belongs to (budgets of scope pipeline:NAME count "
    "it). Filled with the enclosing pipeline's name.",
    "carbon_run_id": "Run id grouping the records of one run. Filled with KFP's job id.",
    "carbon_run_name": "Run name, recorded as the kfp_run_name label. Filled with KFP's job name.",
    "carbon_task": "Step name of the record. Filled with KFP's task name (giving it is not "
    "needed in a dsl.ParallelFor any more, and deprecated).",
    "carbon_task_id": "KFP's id of this execution (pipeline_task_uuid), recorded as the "
    "kfp_task_uuid label. Filled with KFP's placeholder.",
    "carbon_loop": "Inside dsl.ParallelFor: the inputs the loop item feeds, whose values name "
    "the iteration's step, e.g. train[0.01]. Filled when the pipeline is defined.",
}

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Example|Examples|Note|Notes|"
    r"Attributes|References|See Also|Todo|Warning|Warnings):\s*$"
)


def _user_source(func: Callable[..., Any]) -> str:
    """The function's source from its ``def`` on, less the ``def`` line's indentation.

    Only that prefix is removed, and only where present, so a nested function whose multi-line
    string has a shallower line still reads back (where ``textwrap.dedent``, KFP's way, fails).
    """
    try:
        lines, _ = inspect.getsourcelines(func)
    except (OSError, TypeError) as exc:
        raise TypeError(f"carbon_component needs the source of {func!r}: {exc}") from exc
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith("async def "):
            raise TypeError(f"carbon_component cannot wrap async function {func.__name__}()")
        if stripped.startswith("def "):
            indent = line[: len(line) - len(stripped)]
            body = (x[len(indent) :] if x.startswith(indent) else x for x in lines[i:])
            return "".join(body)
    raise TypeError(f"cannot find the 'def' of {func.__name__}() in its source")


def _segment(source: str, node: ast.AST | None) -> str | None:
    return None if node is None else ast.get_source_segment(source, node)


def _parameters(source: str, fn: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    """(name, annotation source, default source or None) of each parameter, in order."""
    a = fn.args
    if a.vararg is not None or a.kwarg is not None:
        raise TypeError(f"{fn.name}(): KFP components cannot take *args or **kwargs")
    positional = [*a.posonlyargs, *a.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(
        a.defaults
    )
    pairs = list(zip(positional, defaults, strict=True)) + list(
        zip(a.kwonlyargs, a.kw_defaults, strict=True)
    )
    out = []
    for arg, default in pairs:
        annotation = _segment(source, arg.annotation)
        if annotation is None:
            raise TypeError(f"{fn.name}(): missing type annotation for argument {arg.arg!r}")
        out.append((arg.arg, annotation, _segment(source, default)))
    return out


_POD_IMPORTS = "import kfp\nfrom kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n"


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    """The function's signature, string annotations (``from __future__ import annotations``)
    evaluated as the pod will: with KFP's and typing's names, then the function's module's."""
    namespace: dict[str, Any] = {}
    exec(_POD_IMPORTS, namespace)  # noqa: S102 - fixed source: the pod module's own imports
    namespace.update(getattr(func, "__globals__", {}))
    try:
        return inspect.signature(func, globals=namespace, eval_str=True)
    except (NameError, SyntaxError, TypeError, AttributeError):
        return inspect.signature(func)


def _add_entries(
    lines: list[str], headers: tuple[str, ...], entries: Mapping[str, str], *, first: bool
) -> list[str]:
    """Add ``entries`` to the section named by ``headers`` (created if missing: before the
    other sections when ``first``, else last)."""
    start = next((i for i, line in enumerate(lines) if line.rstrip() in headers), -1)
    if start >= 0:
        end = next(
            (i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])), len(lines)
        )
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        body = [line for line in lines[start + 1 : end] if line.strip()]
        match = re.match(r"\s*", body[0]) if body else None
        indent = match.group(0) if match and match.group(0) else "    "
        return lines[:end] + [f"{indent}{k}: {v}" for k, v in entries.items()] + lines[end:]
    at = (
        next((i for i, line in enumerate(lines) if _SECTION.match(line)), len(lines))
        if first
        else len(lines)
    )
    block = [headers[0]] + [f"    {k}: {v}" for k, v in entries.items()]
    if at > 0 and lines[at - 1].strip():
        block = ["", *block]
    if at < len(lines):
        block = [*block, ""]
    return lines[:at] + block + lines[at:]


def _augment_docstring(
    doc: str | None, inputs: Mapping[str, str], outputs: Mapping[str, str]
) -> str:
    """Document the added inputs under ``Args:`` and outputs under ``Returns:``, where KFP
    looks for each (google-cloud-pipeline-components documents output artifacts there too)."""
    lines = inspect.cleandoc(doc).split("\n") if doc else []
    lines = _add_entries(lines, ("Args:", "Arguments:"), inputs, first=True)
    lines = _add_entries(lines, ("Returns:", "Return:"), outputs, first=False)
    return "\n".join(lines).strip() + "\n"


def _code_object(module: types.CodeType, name: str) -> types.CodeType:
    for const in module.co_consts:
        if isinstance(const, types.CodeType) and const.co_name == name:
            return const
    raise RuntimeError(f"generated source defines no function {name}")  # pragma: no cover


def generate_step_functions(
    func: Callable[..., Any], config: Mapping[str, Any]
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Return (wrapper, impl): the component function KFP compiles and the user's renamed copy.

    Both carry code objects compiled from one generated source that :mod:`linecache` holds, so
    ``inspect.getsource`` returns exactly what the pod will run.
    """
    from kfp.dsl import Artifact, Metrics, Output

    source = _user_source(func)
    tree = ast.parse(source)
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef) or fn.name != func.__name__:
        raise TypeError(f"the source of {func.__name__}() does not start with its def")
    name = fn.name
    impl = f"{IMPL_PREFIX}{name}"
    params = _parameters(source, fn)
    clash = {p for p, _, _ in params} & {METRICS_OUTPUT, RECORD_OUTPUT, *IDENTITY_INPUTS}
    if clash:
        raise ValueError(f"{name}(): parameter name(s) {sorted(clash)} are reserved by carbonpipe")

    impl_source = re.sub(rf"^def\s+{re.escape(name)}\s*\(", f"def {impl}(", source, count=1)
    returns = _segment(source, fn.returns)
    wrapper_params = [f"{p}: {ann}" + ("" if d is None else f" = {d}") for p, ann, d in params]
    wrapper_params.append(f"{METRICS_OUTPUT}: Output[Metrics]")
    wrapper_params.append(f"{RECORD_OUTPUT}: Output[Artifact]")
    wrapper_params += [f"{p}: str = ''" for p in IDENTITY_INPUTS]
    user_args = ", ".join(f"{p!r}: {p}" for p, _, _ in params)
    identity_args = ", ".join(f"{p!r}: {p}" for p in IDENTITY_INPUTS)
    wrapper_source = "\n".join(
        [
            f"def {name}(",
            "    *,",
            *(f"    {p}," for p in wrapper_params),
            f"){'' if returns is None else f' -> {returns}'}:",
            "    from carbonpipe.integrations.kfp.tracked import run_tracked_step",
            "",
            "    return run_tracked_step(",
            f"        {impl},",
            f"        {{{user_args}}},",
            f"        config={dict(config)!r},",
            f"        metrics={METRICS_OUTPUT},",
            f"        identity={{{identity_args}}},",
            f"        record={RECORD_OUTPUT},",
            "    )",
        ]
    )
    full_source = impl_source.rstrip() + "\n\n\n" + wrapper_source + "\n"
    digest = hashlib.sha256(full_source.encode()).hexdigest()[:12]
    filename = f"<carbon_component {func.__module__}.{func.__qualname__} {digest}>"
    linecache.cache[filename] = (len(full_source), None, full_source.splitlines(True), filename)
    module_code = compile(
        full_source, filename, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True
    )

    host_globals = {"__name__": func.__module__, impl: func}
    wrapper: Any = types.FunctionType(_code_object(module_code, name), host_globals, name)
    impl_fn: Any = types.FunctionType(_code_object(module_code, impl), host_globals, impl)

    signature = _signature(func)
    added = [
        inspect.Parameter(
            METRICS_OUTPUT, inspect.Parameter.KEYWORD_ONLY, annotation=Output[Metrics]
        ),
        inspect.Parameter(
            RECORD_OUTPUT, inspect.Parameter.KEYWORD_ONLY, annotation=Output[Artifact]
        ),
    ] + [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default="", annotation=str)
        for p in IDENTITY_INPUTS
    ]
    parameters = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
    ]
    wrapper.__signature__ = signature.replace(parameters=parameters + added)
    wrapper.__kwdefaults__ = {
        p.name: p.default for p in parameters + added if p.default is not inspect.Parameter.empty
    }
    wrapper.__annotations__ = {
        p.name: p.annotation
        for p in parameters + added
        if p.annotation is not inspect.Parameter.empty
    }
    if signature.return_annotation is not inspect.Signature.empty:
        wrapper.__annotations__["return"] = signature.return_annotation
    wrapper.__doc__ = _augment_docstring(
        func.__doc__,
        {k: v for k, v in ADDED_DOCS.items() if k not in (METRICS_OUTPUT, RECORD_OUTPUT)},
        {k: ADDED_DOCS[k] for k in (METRICS_OUTPUT, RECORD_OUTPUT)},
    )
    wrapper.__qualname__ = func.__qualname__
    wrapper.__module__ = func.__module__
    impl_fn.__module__ = func.__module__
    return wrapper, impl_fn


def carbon_component(
    func: Callable[..., Any] | None = None,
    *,
    base_image: str | None = None,
    packages_to_install: list[str] | None = None,
    pip_index_urls: list[str] | None = None,
    output_component_file: str | None = None,
    install_kfp_package: bool | None = None,
    kfp_package_path: str | None = None,
    pip_trusted_hosts: list[str] | None = None,
    use_venv: bool = False,
    additional_funcs: list[Callable[..., Any]] | None = None,
    embedded_artifact_path: str | None = None,
    task_config_passthroughs: list[Any] | None = None,
    project: str | None = None,
    experiment: str | None = None,
    pipeline: str | None = None,
    team: str | None = None,
    step: str | None = None,
    budget: Any = None,
    store: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    country_iso_code: str | None = None,
    tracking_mode: str | None = None,
    labels: Mapping[str, str] | None = None,
    shift_within: Any = None,
    expected_duration: Any = None,
    intensity_source: str | None = None,
    intensity_zone: str | None = None,
    functional_unit: str | None = None,
    units_from_result: bool | None = None,
) -> Any:
    """Make ``func`` a KFP lightweight component whose every run is a tracked carbonpipe step.

    Takes ``@dsl.component``'s arguments (``base_image`` defaults to carbonpipe's image, which
    has kfp and carbonpipe installed, so ``install_kfp_package`` defaults to False there; on
    another image, ``carbonpipe[kfp]`` is added to ``packages_to_install``) and the tracker's:
    ``project``, ``experiment``, ``pipeline`` (default: the enclosing pipeline's name),
    ``team``, ``step`` (default: the KFP task name), ``budget`` (a :class:`carbonpipe.Budget`
    or the mapping of its fields: the step is gated before it starts), ``store`` (default:
    the ``carbon_store`` argument, else ``CARBONPIPE_STORE``), the location
    (``cloud_provider``, ``cloud_region``, ``country_iso_code``; default: detected),
    ``tracking_mode`` and ``labels``. Every setting is fixed in the component's source, so it
    is validated now.

    The component gains an ``Output[Metrics]`` named ``carbon_metrics`` (what the KFP UI shows)
    and string inputs ``carbon_store``, ``carbon_pipeline``, ``carbon_run_id``,
    ``carbon_run_name``, ``carbon_task``, ``carbon_task_id`` and ``carbon_loop``; calling it in a
    pipeline fills all but the store from KFP's placeholders and the pipeline being defined.
    Each execution gets its own record: in a ``dsl.ParallelFor`` the step is named
    ``<task>[<item>]`` (the values of the inputs the loop feeds; the task uuid when there is
    none) and labelled ``kfp_loop_item`` and ``kfp_task_uuid``, so iterations never share a
    record and a retry is the next attempt of its own iteration. Passing ``carbon_task`` (the
    old way to tell iterations apart) still names the step, with a ``DeprecationWarning``.
    Usable as ``@carbon_component`` or ``@carbon_component(...)``.

    ``shift_within`` (``"6h"``, ``"15m"``, seconds) starts the step when the grid is cleanest
    within that long, by the forecast of ``intensity_source``/``intensity_zone`` (default:
    ``CARBONPIPE_INTENSITY_SOURCE``/``_ZONE``) over ``expected_duration`` (default: the step's
    last run's): the pod sleeps until then, and the record carries ``scheduling``.

    ``functional_unit`` (``"training run"``) makes each run one unit of work, SCI's R; the
    function may declare its own with ``carbonpipe.current_step().add_units(N, NAME)``, or,
    with ``units_from_result=True``, return them (a number of ``functional_unit``, ``"N
    NAME"`` or ``{"count": N, "name": NAME}``). The record then carries ``sci_g_per_unit``.
    """
    settings = dict(
        project=project,
        experiment=experiment,
        pipeline=pipeline,
        team=team,
        step=step,
        budget=budget,
        store=store,
        cloud_provider=cloud_provider,
        cloud_region=cloud_region,
        country_iso_code=country_iso_code,
        tracking_mode=tracking_mode,
        labels=labels,
        shift_within=shift_within,
        expected_duration=expected_duration,
        intensity_source=intensity_source,
        intensity_zone=intensity_zone,
        functional_unit=functional_unit,
        units_from_result=units_from_result or None,
    )
    step_config(**settings)  # fail at definition time, before a pipeline is even compiled

    def decorate(fn: Callable[..., Any]) -> Any:
        from kfp import dsl

        from ._identity import (
            LOOP_INPUTS,
            PIPELINE_NAME,
            RUN_ID,
            RUN_NAME,
            TASK_ID,
            TASK_NAME,
            with_identity,
        )

        returns = _signature(fn).return_annotation
        config = step_config(
            **settings,
            function=fn.__name__,
            returns_value=returns not in (inspect.Signature.empty, None, type(None)),
        )
        wrapper, impl = generate_step_functions(fn, config)
        image = base_image or component_image()
        packages = list(packages_to_install or [])
        install_kfp = install_kfp_package
        if not is_carbonpipe_image(image):
            if not any(p.replace("_", "-").startswith("carbonpipe") for p in packages):
                packages.insert(0, f"carbonpipe[kfp]=={__version__}")
            install_kfp = True if install_kfp is None else install_kfp
        component = dsl.component(
            wrapper,
            base_image=image,
            packages_to_install=packages or None,
            pip_index_urls=pip_index_urls,
            output_component_file=output_component_file,
            install_kfp_package=bool(install_kfp),
            kfp_package_path=kfp_package_path,
            pip_trusted_hosts=pip_trusted_hosts,
            use_venv=use_venv,
            additional_funcs=[impl, *(additional_funcs or [])],
            embedded_artifact_path=embedded_artifact_path,
            task_config_passthroughs=task_config_passthroughs,
        )
        return with_identity(
            component,
            {
                "carbon_pipeline": PIPELINE_NAME,
                "carbon_run_id": RUN_ID,
                "carbon_run_name": RUN_NAME,
                "carbon_task": TASK_NAME,
                "carbon_task_id": TASK_ID,
                "carbon_loop": LOOP_INPUTS,
            },
        )

    if func is not None:
        return decorate(func)
    return decorate
