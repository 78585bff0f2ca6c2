"""What `explain` must say, computed from the sequence of runs alone, for explain's tests.

The sequential model (model.py) applies each run row by row; this wrapper compares the model's store
before and after each succeeded row and records what changed as events, then keeps, as plain state:
where each identifier held now came from, every customer's standing merge, every value's holders over
time, every card's holders and labels over time, and the runs that touched each customer, value and
card. A revert puts back the model's state from before the reverted run (origins and merges too) and
records the difference as its own events. Nothing here reads the store or the engine's provenance.

Causes are compared as keys: ("snapshot",), ("run", run_id, file, row_number) or ("revert", run_id).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

from model import Applied, CheckedRow, ModelStore, run_model
from pipeline.config import OrgConfig

SNAPSHOT = ("snapshot",)
Key = tuple  # a cause key
Holding = tuple[int, str, str, str, str]  # customer, source, account, id_type, id_value


@dataclass
class Standing:
    """The part of the history that a revert puts back: it describes the store as it is."""

    store: ModelStore
    origin: dict[Holding, tuple] = field(default_factory=dict)
    merges: dict[int, tuple[int | None, Key]] = field(default_factory=dict)


@dataclass
class History:
    standing: Standing
    intervals: dict[tuple[str, str], list[list]] = field(default_factory=lambda: defaultdict(list))
    """(id_type, id_value) -> [customer, source, account, since action, since key, until action, until key]."""
    card_states: dict[str, list[tuple]] = field(default_factory=dict)
    """card -> [(holder, label, action, key)], the first one the snapshot's."""
    customer_runs: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    """customer -> one run id per change that named it (from or to), in order."""
    value_runs: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    card_runs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    before_run: dict[str, Standing] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, store: ModelStore) -> History:
        history = cls(Standing(store.copy()))
        for holding in store.identifiers:
            c, s, a, t, v = holding
            history.standing.origin[holding] = ((c, "snapshot", SNAPSHOT, None),)
            history.intervals[(t, v)].append([c, s, a, "snapshot", SNAPSHOT, None, None])
        for c, (status, into, _) in store.customers.items():
            if status == "MERGED":
                history.standing.merges[c] = (into, SNAPSHOT)
        for number, (_, holder, label) in store.cards.items():
            history.card_states[number] = [(holder, label, "snapshot", SNAPSHOT)]
        return history

    @property
    def store(self) -> ModelStore:
        return self.standing.store

    def run(self, run_id: str, file: str, rows: list[dict[str, str | None]], config: OrgConfig) -> None:
        """Apply a run's rows to the model, recording each succeeded row's changes."""
        self.before_run[run_id] = copy.deepcopy(self.standing)

        def on_row(index: int, row: CheckedRow, before: ModelStore, after: ModelStore, applied: Applied) -> None:
            self._row(run_id, ("run", run_id, file, index + 1), row, before, after, applied)

        run_model(self.store, rows, config, on_row)

    def _row(self, run_id: str, key: Key, row: CheckedRow, before: ModelStore, after: ModelStore, a: Applied) -> None:
        removed = before.identifiers - after.identifiers
        added = after.identifiers - before.identifiers
        origin = self.standing.origin
        if a.replaced is not None:  # the value a replace took away (before a merge: it does not move)
            (holding,) = [h for h in removed if h[1:] == (row.source, row.account_id, row.id_type, a.replaced)]
            self._close(holding, "replace", key)
            origin.pop(holding)
            self._touch(run_id, holding[0], a.survivor_id or holding[0], value=holding[3:])
            removed.discard(holding)
        if a.outcome == "merged":
            victim, survivor = a.victim_id, a.survivor_id
            assert victim is not None and survivor is not None
            self._touch(run_id, victim, survivor, value=(row.id_type, row.id_value))  # the merge itself
            self.standing.merges[victim] = (survivor, key)
            for holding in sorted(h for h in removed if h[0] == victim):
                moved = (survivor, *holding[1:])
                assert moved in added
                self._close(holding, "move", key)
                self._open(moved, "move", key)
                origin[moved] = ((survivor, "move", key, victim), *origin.pop(holding))
                self._touch(run_id, victim, survivor, value=holding[3:])
                added.discard(moved)
                removed.discard(holding)
        for holding in sorted(removed):  # a remove, or campaign holders losing the value
            self._close(holding, "remove" if row.action == "remove" else "drop", key)
            origin.pop(holding)
            self._touch(run_id, holding[0], None, value=holding[3:])
        for holding in sorted(added):
            self._open(holding, "add", key)
            origin[holding] = ((holding[0], "add", key, None),)
            self._touch(run_id, None, holding[0], value=holding[3:])
        for number in sorted(after.cards):
            (_, old_holder, old_label), (_, holder, label) = before.cards[number], after.cards[number]
            if (old_holder, old_label) == (holder, label):
                continue
            if a.outcome == "merged":
                action = "card_move"
            elif row.action == "remove":
                action = "card_delink"
            else:
                action = "card_label" if old_holder == holder else "card_link"
            self.card_states[number].append((holder, label, action, key))
            self._touch(run_id, old_holder, holder, card=number)

    def revert(self, reverted: str, revert_id: str) -> None:
        """Undo a run: the standing state from before it comes back; the difference is the revert's events."""
        key = ("revert", revert_id)
        restored = self.before_run.pop(reverted)
        now = self.store
        for holding in sorted(now.identifiers - restored.store.identifiers):
            self._close(holding, "revert_remove", key)
            self._touch(revert_id, holding[0], None, value=holding[3:])
        for holding in sorted(restored.store.identifiers - now.identifiers):
            self._open(holding, "revert_restore", key)
            self._touch(revert_id, None, holding[0], value=holding[3:])
        for number in sorted(now.cards):
            (_, holder, label), (_, old_holder, old_label) = now.cards[number], restored.store.cards[number]
            if (holder, label) != (old_holder, old_label):
                self.card_states[number].append((old_holder, old_label, "revert_card", key))
                self._touch(revert_id, holder, old_holder, card=number)
        for c, (status, into, _) in now.customers.items():
            if status == "MERGED" and restored.store.customers[c][0] != "MERGED":
                self._touch(revert_id, c, into)
        self.standing = restored

    def _open(self, holding: Holding, action: str, key: Key) -> None:
        c, s, a, t, v = holding
        self.intervals[(t, v)].append([c, s, a, action, key, None, None])

    def _close(self, holding: Holding, action: str, key: Key) -> None:
        c, s, a, t, v = holding
        opened = [i for i in self.intervals[(t, v)] if i[:3] == [c, s, a] and i[5] is None]
        assert len(opened) == 1, (holding, opened)
        opened[0][5:] = [action, key]

    def _touch(
        self,
        run_id: str,
        lost: int | None,
        gained: int | None,
        value: tuple | None = None,
        card: str | None = None,
    ) -> None:
        """One change naming these customers (and a value or a card), as explain counts changes per run."""
        for c in {lost, gained} - {None}:
            assert c is not None
            self.customer_runs[c].append(run_id)
        if value is not None:
            self.value_runs[(value[0], value[1])].append(run_id)
        if card is not None:
            self.card_runs[card].append(run_id)
