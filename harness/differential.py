"""The gate's differential pass: what the candidate's server stored and returns, against what the baseline's
server stored and returns for the very same client calls (same clients, same scenarios, fresh stores).

A read-back only proves a server self-consistent: whatever it generated at write time (ids, run names, times,
system tags, artifact locations, defaults) becomes the expected value, so a candidate that generates
something else passes it. Here the baseline's answers are the reference. Two fresh stores differ by nature in
what they generate at random or by the clock, so before comparing both sides are put in one canonical form:

  ids        32-hex run/model ids and long numeric file-store ids: a map keyed by them is listed in the
             order of its entities' content; both sides are then walked in parallel and each candidate id
             takes the number (``<id:N>``) of the baseline id in its place: an id pointing elsewhere shows
  roots      the two stores' directories (artifact roots a server without proxying hands out): ``<store>``
  times      epoch-millisecond integers (start/end/creation times, metric timestamps a client took from its
             clock) and the ``window`` a write step recorded: ``<time>``; explicit times are still held to
             what the client sent by the read-back, generated ones to the write window (scenarios/common.py)
  run names  generated names (``adjective-animal-123``) on both sides: ``<generated-name>``

Everything else must be identical. What lives here: the canonical form and the comparison, pure, and how
one client's two answers to one scenario become a `differential` check. What does not: running the two
passes (harness/cell.py, harness/clientsteps.py), declaring an intended change (``[[change]]`` in the
expectations, harness/expectations.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from harness.results import Check, Problem, Status
from harness.verify import diff

ID = re.compile(r"\b(?:[0-9a-f]{32}|\d{15,20})\b")
EPOCH_MS = (10**12, 10**13)  # 2001-09-09 .. 2286-11-20
GENERATED_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{1,4}$")
MASKED_KEYS = ("window",)  # the write step's own wall-clock window
BY_ID = "<by-id>"  # a map keyed by generated ids, turned into a list sorted by content

# What a client got back in one side's pass: the observed record, or why there is none.
Outcome = dict[str, Any] | Problem


def _roots(text: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        if root:
            text = text.replace(root, "<store>")
    return text


def _plain(value: Any, roots: tuple[str, ...]) -> Any:
    """Times, generated names, store roots and the write window replaced; ids kept (aligned later); a map
    whose keys are all generated ids becomes ``{BY_ID: [[id, value], ...]}`` in the order of its values'
    content with every id masked, so that both sides list the same entities in the same order."""
    if isinstance(value, dict):
        if value and all(ID.fullmatch(str(k)) for k in value):
            items = [[k, _plain(v, roots)] for k, v in value.items()]
            return {BY_ID: sorted(items, key=lambda kv: ID.sub("<id>", json.dumps(kv[1], sort_keys=True)))}
        return {_roots(str(k), roots): "<masked>" if k in MASKED_KEYS else _plain(v, roots)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_plain(v, roots) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and EPOCH_MS[0] <= value < EPOCH_MS[1]:
        return "<time>"
    if isinstance(value, str):
        return "<generated-name>" if GENERATED_NAME.match(value) else _roots(value, roots)
    return value


def _pair(base: Any, cand: Any, pairs: dict[str, str]) -> None:
    """Which candidate id stands where each baseline id stands: both walked in parallel in the baseline's
    order; the first place an id is met pairs it, one to one (a later place cannot re-pair either side)."""
    if isinstance(base, dict) and isinstance(cand, dict):
        for key in [k for k in base if k in cand]:
            _pair(base[key], cand[key], pairs)
    elif isinstance(base, list) and isinstance(cand, list):
        for b, c in zip(base, cand, strict=False):
            _pair(b, c, pairs)
    elif isinstance(base, str) and isinstance(cand, str):
        ours, theirs = ID.findall(base), ID.findall(cand)
        if len(ours) == len(theirs):
            taken = set(pairs.values())
            for b, c in zip(ours, theirs, strict=True):
                if b not in pairs and c not in taken:
                    pairs[b] = c
                    taken.add(c)


def _names(plain: Any) -> dict[str, str]:
    """Each id in ``plain`` numbered ``<id:N>`` in order of first appearance."""
    names: dict[str, str] = {}
    for match in ID.finditer(json.dumps(plain)):
        names.setdefault(match.group(0), f"<id:{len(names) + 1}>")
    return names


def _numbered(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {_numbered(k, names): _numbered(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbered(v, names) for v in value]
    if isinstance(value, str):
        return ID.sub(lambda m: names.get(m.group(0), "<id:?>"), value)
    return value


def canonical(snapshot: Any, roots: tuple[str, ...] = ()) -> Any:
    """``snapshot`` alone in canonical form: ids numbered in order of first appearance."""
    plain = _plain(snapshot, roots)
    return _numbered(plain, _names(plain))


def compare(baseline: Any, candidate: Any, *, baseline_roots: tuple[str, ...] = (),
            candidate_roots: tuple[str, ...] = ()) -> list[str]:  # fmt: skip
    """Every difference between what the baseline's server returned and what the candidate's did, each as
    "PATH: the candidate returns X where the baseline returned Y". Ids are numbered on the baseline's side in
    order of first appearance; each candidate id takes the number of the baseline id it stands in place of
    (one standing where the baseline has none is ``<id:?>``), so an id that points elsewhere shows."""
    base, cand = _plain(baseline, baseline_roots), _plain(candidate, candidate_roots)
    names = _names(base)
    pairs: dict[str, str] = {}
    _pair(base, cand, pairs)
    theirs = {c: names[b] for b, c in pairs.items() if b in names}
    return [_phrase(d) for d in diff(_numbered(base, names), _numbered(cand, theirs))]


def _phrase(difference: str) -> str:
    """verify.diff says "PATH: OBSERVED, expected EXPECTED"; here the observed side is the candidate's."""
    where, _, rest = difference.partition(": ")
    observed, sep, expected = rest.rpartition(", expected ")
    if not sep:
        return f"{where}: the candidate differs from the baseline: {rest}"
    return f"{where}: the candidate returns {observed} where the baseline returned {expected}"


def compare_answers(check: Check, base: Outcome, cand: Outcome, base_root: str, cand_root: str) -> None:
    """One client's view of one scenario through the baseline and through the candidate, judged into
    ``check``: different answers fail, one per difference; both failing alike is the same answer; no answer on
    one side leaves nothing to compare (an error, nobody to blame but the machine)."""
    if isinstance(base, dict) and isinstance(cand, dict):
        differences = compare(base, cand, baseline_roots=(base_root,), candidate_roots=(cand_root,))
        check.fail_each(differences)
        if differences:
            check.detail = f"{len(differences)} difference(s): " + "; ".join(differences[:2])
        return
    lost = [o for o in (base, cand) if isinstance(o, Problem) and o.status is Status.ERROR]
    if lost:  # no answer on one side: nothing to compare, and nobody to blame but the machine
        check.problems.append(Problem(f"not compared: {lost[0].text}", Status.ERROR))
        check.settle()
        check.detail = check.problems[0].text
        return
    if isinstance(base, Problem) and isinstance(cand, Problem):
        # "the server answered HTTP 404 to POST /api/...": the same answer to the same call is alike.
        if base.text.split(": ", 1)[0] == cand.text.split(": ", 1)[0]:
            check.detail = f"both servers failed alike: {cand.text}"
            return
        text = f"the candidate failed otherwise than the baseline: {cand.text} (the baseline: {base.text})"
    elif isinstance(cand, Problem):
        text = f"the candidate failed where the baseline answered: {cand.text}"
    else:
        assert isinstance(base, Problem)
        text = f"the candidate answered where the baseline failed: {base.text}"
    check.fail_each([text])
    check.detail = text
