"""Opening and closing a cell's features (harness/features/__init__.py): pure units with stand-in features;
the real ones run in tests/test_auth.py and tests/test_s3.py."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

import harness.features as features_module
from harness.backends import StoreError
from harness.features import Site, close_features, open_features


class Stand:
    """A feature that records its closing, and fails to close when told to."""

    def __init__(self, name: str, log: list[str], close_fails: bool = False) -> None:
        self.name, self.log, self.close_fails = name, log, close_fails

    def close(self) -> None:
        self.log.append(f"close {self.name}")
        if self.close_fails:
            raise StoreError(f"{self.name} would not close")


def modules(log: list[str], fail_open: str = "", fail_close: str = "") -> types.SimpleNamespace:
    def import_module(path: str) -> types.SimpleNamespace:
        name = path.rsplit(".", 1)[1]

        def open_(site: Site) -> Stand:
            log.append(f"open {name}")
            if name == fail_open:
                raise StoreError(f"{name} would not open")
            return Stand(name, log, close_fails=name == fail_close)

        return types.SimpleNamespace(open=open_)

    return types.SimpleNamespace(import_module=import_module)


SITE = Site(slug="c", run_id="r", store=None, databases={})  # type: ignore[arg-type]


def test_features_open_in_order_and_close_in_reverse_each_even_when_one_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log: list[str] = []
    monkeypatch.setattr(features_module, "importlib", modules(log, fail_close="s3"))
    opened = open_features(frozenset({"auth", "s3"}), SITE)
    assert [f.name for f in opened] == ["s3", "auth"]
    with pytest.raises(StoreError, match=r"^s3: s3 would not close$"):
        close_features(opened)
    assert log == ["open s3", "open auth", "close auth", "close s3"]


def test_a_feature_that_cannot_open_closes_those_before_it_and_says_both_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []
    monkeypatch.setattr(features_module, "importlib", modules(log, fail_open="auth"))
    with pytest.raises(StoreError, match=r"^auth would not open$"):
        open_features(frozenset({"auth", "s3"}), SITE)
    assert log == ["open s3", "open auth", "close s3"]
    log.clear()
    monkeypatch.setattr(features_module, "importlib", modules(log, fail_open="auth", fail_close="s3"))
    with pytest.raises(
        StoreError, match=r"^auth would not open; closing the features opened before it: s3: "
    ):
        open_features(frozenset({"auth", "s3"}), SITE)
