"""The acked-writes ledger of one cell: every write a client saw acknowledged, in which later phases a read
confirmed it intact or tried and did not, and the account of what was never read back.

A write acknowledged in some phase must be read back intact in every later phase where a client can read it
(and, if written before the upgrade, after the restore). The ledger keeps the writes, the phases that served
the store (with their server's version), the (record, phase) pairs some read confirmed and the read checks
that did not; at the end of the cell it renders the `acked-writes` check and, once the expectations have
been applied, settles its status. What lives here: that bookkeeping. What does not: running the reads and
writes (harness/clientsteps.py), comparing a record (harness/verify.py), the timeline (harness/cell.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.results import CellResult, Check, Status, worst
from harness.scenarios import Scenario
from harness.specs import Spec
from harness.verify import Written
from harness.versions import MlflowVersion


@dataclass
class Account:
    """What the acked-writes check found: records never read back, and records reads did not confirm."""

    check: Check
    lost: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    reads: list[Check] = field(default_factory=list)


@dataclass
class Ledger:
    """The cell's acknowledged writes and what the reads made of them. ``origin`` is the path's first
    version (the only reader after the restore), ``clients`` the cell's clients (the readers elsewhere)."""

    scenarios: list[Scenario]
    origin: Spec
    clients: list[Spec]
    backend: str
    written: list[Written] = field(default_factory=list)
    # The (record key, phase) pairs some client confirmed, and the read checks that tried and did not.
    confirmed: set[tuple[str, str]] = field(default_factory=set)
    tried: dict[tuple[str, str], list[Check]] = field(default_factory=dict)
    # The phases in which a server served the store, in order, with that server's version.
    phase_servers: dict[str, MlflowVersion] = field(default_factory=dict)

    def serving(self, phase: str, server: MlflowVersion) -> None:
        """A phase in which ``server`` serves the store: what was written before it must be read in it."""
        self.phase_servers[phase] = server

    def acknowledged(self, written: Written) -> None:
        self.written.append(written)

    def reading(self, key: str, phase: str) -> list[Check]:
        """The read checks in ``phase`` that tried ``key`` and did not confirm it (a read appends to it)."""
        return self.tried.setdefault((key, phase), [])

    def confirm(self, key: str, phase: str) -> None:
        self.confirmed.add((key, phase))

    def account(self, result: CellResult) -> Account | None:
        """`acked writes: N, read back: N`: every write a client saw acknowledged must be read back intact
        after every hop (and, if written before the upgrade, after the restore) by at least one client that
        can read it. A shortfall names the missing records; its status is settled after the expectations."""
        if not self.written:
            return None
        account = Account(result.add(Check("acked-writes", "cell", Status.PASS)))
        phases = list(self.phase_servers)  # in the order they served
        for w in self.written:
            later = phases[phases.index(w.phase) :]
            for phase in [p for p in later if p != "rollback" or w.phase == "before"]:
                if (w.key, phase) in self.confirmed:
                    continue
                tried = self.tried.get((w.key, phase))
                if tried:
                    how = ", ".join(sorted({c.status.value for c in tried}))
                    account.unconfirmed.append(f"{w.key}: not confirmed in {phase} (reads: {how})")
                    account.reads += tried
                elif self.can_be_read(w, phase):
                    account.lost.append(f"{w.key}: never read back in {phase}")
        missing = account.lost + account.unconfirmed
        short = {m.split(":", 1)[0] for m in missing}
        check = account.check
        check.detail = f"acked writes: {len(self.written)}, read back: {len(self.written) - len(short)}"
        if missing:
            check.detail += f"; missing: {'; '.join(missing[:2])}" + (" …" if len(missing) > 2 else "")
            check.excerpt = "\n".join(missing)
        return account

    @staticmethod
    def settle(account: Account | None, result: CellResult, *, completed: bool) -> None:
        """A record the harness never read back is a fail of its own; one that reads did not confirm takes the
        worst status those reads ended with, after the expectations (a declared failure stays xfail).
        ``completed``: the timeline ran to its end; a record never read because it did not is no lost write
        (the reason is already an error check)."""
        if account is None or not (account.lost or account.unconfirmed):
            return
        lost = [Status.FAIL if completed else Status.ERROR] if account.lost else []
        statuses = [c.status for c in account.reads] + lost
        account.check.status = worst(statuses)
        result.finish()

    def can_be_read(self, w: Written, phase: str) -> bool:
        """Whether a reader of ``phase`` has the APIs ``w``'s scenario needs against that phase's server."""
        scenario = next(s for s in self.scenarios if s.name == w.scenario)
        server = self.phase_servers[phase]
        readers = [self.origin] if phase == "rollback" else list(self.clients)
        return any(not scenario.lacks(r.version, server, self.backend) for r in readers)
