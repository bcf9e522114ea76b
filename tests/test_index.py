"""`latest` against the real index: the newest release that really installs, not merely the newest."""

from packaging.version import Version

from harness import index, pythons


def test_latest_skips_what_does_not_resolve() -> None:
    known = index.releases()
    versions = {str(r.version) for r in known}
    assert {"1.30.1", "2.22.5", "3.17.2"} <= versions

    def python_for(release: index.Release):
        interp = pythons.pick(release.requires_python, release.version.python_max())
        return interp.path if interp else None

    latest, skipped = index.newest_installable(known, python_for)
    assert latest.release >= Version("3.17.2")
    assert not latest.broken_reason()
    if "3.18.0" in versions and latest.release < Version("3.18.0"):
        assert any(s.startswith("3.18.0:") for s in skipped), skipped


def test_yanked_releases_are_excluded() -> None:
    yanked = [r for r in index.releases() if str(r.version) == "2.0.0"]
    assert yanked and yanked[0].excluded_reason
