"""``wait_for_clean_grid``: wait until the grid is cleanest within a deadline; put it before any
step (``train.after(wait)``).

Interface only (signature and docstring, which KFP reads into the spec); the implementation is
:func:`carbonpipe.integrations.kfp.shift.run_wait_for_clean_grid`.
"""

from typing import Any

from kfp import dsl
from kfp.dsl import Metrics, Output

from ._image import component_image


def wait_for_clean_grid(
    shift_within: str,
    expected_duration: str,
    plan: Output[Metrics],
    intensity_source: str = "",
    intensity_zone: str = "",
) -> str:
    """Wait until the start, within shift_within, whose forecast run of expected_duration is cleanest.

    Args:
        shift_within: How long the start may be put off: 90s, 15m, 6h or seconds.
        expected_duration: How long the next step runs (the forecast is averaged over it): 90s, 15m, 1h or seconds.
        intensity_source: Time-series source: file:PATH, electricitymaps, watttime, carbon-aware-sdk or uk. Empty: CARBONPIPE_INTENSITY_SOURCE.
        intensity_zone: Grid zone, e.g. FR or DE. Empty: CARBONPIPE_INTENSITY_ZONE.

    Returns:
        plan: The plan for the KFP UI: shifted (1 or 0), wait_s, waited_s, intensity_now_g_per_kwh, intensity_planned_g_per_kwh, saving_percent.
        Output: The plan as JSON: decided_at, planned_start, deadline, intensities, saving_fraction, source, zone, reason.
    """
    from carbonpipe.integrations.kfp.shift import run_wait_for_clean_grid

    return run_wait_for_clean_grid(
        shift_within=shift_within,
        expected_duration=expected_duration,
        intensity_source=intensity_source,
        intensity_zone=intensity_zone,
        metrics=plan,
    )


_interface = wait_for_clean_grid


def build(image: str | None = None) -> Any:
    """Return the ``wait_for_clean_grid`` component running in ``image`` (default: ours)."""
    return dsl.component(
        _interface, base_image=image or component_image(), install_kfp_package=False
    )


wait_for_clean_grid = build()  # noqa: F811 - the component replaces its interface function
