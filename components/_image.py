"""The one image every carbonpipe component runs in, tagged with the package version.

``Dockerfile`` at the repository root builds it; the release pipeline pushes it as
:data:`RELEASE_IMAGE`. Set ``CARBONPIPE_IMAGE`` to run the components on another build (a
mirror, a digest, a dev tag); the shipped component YAML always names the release tag.
"""

from __future__ import annotations

import os

from carbonpipe import __version__

IMAGE_REPOSITORY = "ghcr.io/carbonpipe/carbonpipe"
IMAGE_ENV = "CARBONPIPE_IMAGE"
RELEASE_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"


def component_image() -> str:
    """Return the image components run in: ``CARBONPIPE_IMAGE``, else :data:`RELEASE_IMAGE`."""
    return os.environ.get(IMAGE_ENV, "").strip() or RELEASE_IMAGE


def is_carbonpipe_image(image: str) -> bool:
    """Whether ``image`` is ours (it has carbonpipe and kfp installed, so nothing to pip install)."""
    return image == component_image() or image.split("@")[0].rsplit(":", 1)[0] == IMAGE_REPOSITORY
