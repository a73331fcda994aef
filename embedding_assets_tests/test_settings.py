"""One module reads the environment: settings.py."""

import ast
from pathlib import Path

import pytest

import embedding_assets
from embedding_assets import settings

PACKAGE = Path(embedding_assets.__file__).parent


def _reads_of_environment(tree: ast.AST) -> list[int]:
    """Lines that read a variable: os.environ.get / [...] / in, os.getenv."""

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "getenv" or (
                node.func.attr in ("get", "setdefault") and is_environ(node.func.value)
            ):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Subscript) and is_environ(node.value) and isinstance(node.ctx, ast.Load)
        ) or (isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators)):
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_reads_the_environment():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py" and path.parent == PACKAGE:
            continue
        lines = _reads_of_environment(ast.parse(path.read_text()))
        if lines:
            offenders[str(path.relative_to(PACKAGE))] = lines
    assert offenders == {}
    # and the scan does find reads where there are some
    assert _reads_of_environment(ast.parse((PACKAGE / "settings.py").read_text()))


def test_values_are_typed_like_their_defaults(monkeypatch):
    monkeypatch.setenv("EA_NUM_SHARDS", "32")
    monkeypatch.setenv("EA_MAX_ERROR_RATE", "0.01")
    monkeypatch.setenv("EA_MODEL", "/models/bge-m3")
    monkeypatch.setenv("EA_BATCH_SIZE", "")  # empty: the default
    assert settings.num_shards() == 32
    assert settings.get("EA_MAX_ERROR_RATE") == 0.01
    assert settings.get("EA_MODEL") == "/models/bge-m3"
    assert settings.get("EA_BATCH_SIZE") == 16
    monkeypatch.setenv("EA_BATCH_SIZE", "many")
    with pytest.raises(ValueError, match="EA_BATCH_SIZE"):
        settings.get("EA_BATCH_SIZE")
    with pytest.raises(KeyError):
        settings.get("EA_NO_SUCH_THING")


def test_readme_documents_every_setting():
    readme = (PACKAGE.parent / "README.md").read_text()
    assert [name for name in settings.SETTINGS if f"`{name}`" not in readme] == []


def test_urls_are_masked_for_printing():
    assert settings.mask_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert settings.mask_url("mongodb://app:pw@db:27017/?x=1") == "mongodb://app:***@db:27017/?x=1"
    assert settings.mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
