from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.pythons import Interpreter, installed, pick

POOL = tuple(
    Interpreter(Version(v), Path(f"/py/{v}")) for v in ("3.8.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0")
)


def test_prefers_311_within_limits() -> None:
    assert pick(SpecifierSet(">=3.7"), Version("3.11"), POOL).version == Version("3.11.7")
    assert pick(SpecifierSet(">=3.7"), Version("3.10"), POOL).version == Version("3.10.13")


def test_goes_newer_only_when_it_must() -> None:
    assert pick(SpecifierSet(">=3.12"), None, POOL).version == Version("3.12.1")
    assert pick(SpecifierSet(">=3.14"), None, POOL) is None


def test_finds_real_interpreters() -> None:
    found = installed()
    assert found, "no Python 3 found on this machine"
    assert all(i.path.exists() for i in found)
