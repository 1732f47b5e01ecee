"""The state of every alert (rule + group), its history, and the notifications
still to deliver -- in one JSON file, written atomically after each change.

An alert is ``pending`` while its condition holds for less than the rule's
``for``, then ``firing``; it resolves when the condition stops holding. A
transition and the notifications it makes are written in the same atomic
write, before any is sent; a notification leaves the file once its notifier
took it. So a watcher killed at any point and started again neither repeats
a transition nor loses one: what it had not delivered is delivered then
(a notification sent an instant before the kill, not yet crossed off, is
sent again: its ``id`` is the same, for a receiver to drop).

Cooldown: after an incident of a rule and group resolves, a new one within the
rule's ``cooldown`` is kept (``firing``, shown in the UI and the history) but
not notified; if it still fires when the cooldown ends, it is notified then.
An incident never notified as firing is never notified as resolved.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from llamonitor.quality._alert_eval import GroupKey, Observation
from llamonitor.quality._alert_rules import AnomalyRule, ThresholdRule
from llamonitor.storage._files import write_atomic

logger = logging.getLogger("llamonitor.alerts")

STATE_VERSION = 1
HISTORY_LIMIT = 500
"""Transitions kept in the state file (the UI's history)."""


def group_label(group: GroupKey) -> str:
    return ", ".join(f"{k}={v or '(none)'}" for k, v in group) or "all spans"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


@dataclass
class Alert:
    """One rule and group's state."""

    rule: str
    group: GroupKey
    status: str = "ok"  # ok | pending | firing
    since: float | None = None
    """When the condition began to hold (``pending``) / the incident fired (``firing``)."""
    value: float | None = None
    incident: str | None = None
    notified: bool = False
    """Whether this incident's firing was notified (a cooldown may hold it back)."""
    last_resolved: float | None = None
    """When the last notified incident resolved (for the cooldown)."""
    detail: str = ""

    def key(self) -> str:
        return json.dumps([self.rule, [list(p) for p in self.group]])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["group"] = [list(p) for p in self.group]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Alert:
        d = dict(d)
        d["group"] = tuple((str(k), str(v)) for k, v in d.get("group", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Delivery:
    """A notification not yet taken by its notifier."""

    id: str
    notifier: str
    payload: dict[str, Any]
    attempts: int = 0
    next_at: float = 0.0
    created: float = 0.0
    last_error: str | None = None


@dataclass
class _File:
    alerts: dict[str, Alert] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[Delivery] = field(default_factory=list)
    evaluated_at: float | None = None


class StateStore:
    """The alerts' state, in memory and in ``path``; every method is thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.data = _File()
        self.changed = threading.Condition(self.lock)
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text("utf-8"))
            if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
                raise ValueError(f"not a version {STATE_VERSION} alert state file")
            self.data = _File(
                alerts={a.key(): a for a in map(Alert.from_json, raw.get("alerts", []))},
                history=list(raw.get("history", [])),
                outbox=[Delivery(**d) for d in raw.get("outbox", [])],
                evaluated_at=raw.get("evaluated_at"),
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # A damaged state file must not stop the alerts: start afresh, keep the old one.
            backup = path.with_name(path.name + ".damaged")
            logger.error("alert state %s is unreadable (%s): starting afresh; kept as %s",
                         path, exc, backup)
            try:
                path.replace(backup)
            except OSError:
                pass

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            body = json.dumps(
                {
                    "version": STATE_VERSION,
                    "evaluated_at": self.data.evaluated_at,
                    "alerts": [a.to_json() for a in self.data.alerts.values()],
                    "history": self.data.history[-HISTORY_LIMIT:],
                    "outbox": [asdict(d) for d in self.data.outbox],
                },
                allow_nan=False,
                default=str,
            ).encode()

            def write(f: BinaryIO) -> None:
                f.write(body)

            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, write)

    def signature(self) -> str:
        """What must be on disk: every alert's state but its current value, the
        history and the outbox."""
        with self.lock:
            return json.dumps([
                sorted((k, a.status, a.since, a.incident, a.notified, a.last_resolved)
                       for k, a in self.data.alerts.items()),
                self.data.history[-1].get("id") if self.data.history else None,
                [d.id for d in self.data.outbox],
            ], default=str)

    def save_if_changed(self, before: str) -> bool:
        with self.lock:
            if self.signature() == before:
                return False
            self.save()
            self.changed.notify_all()
            return True

    @contextmanager
    def changing(self) -> Iterator[_File]:
        """Change the state; it is saved (and deliverers woken) when the block ends."""
        with self.lock:
            yield self.data
            self.save()
            self.changed.notify_all()

    # -- transitions ----------------------------------------------------------------

    def apply(
        self, rule: ThresholdRule | AnomalyRule, observations: list[Observation], now: float,
        notifiers: list[str],
    ) -> list[dict[str, Any]]:
        """Move ``rule``'s alerts on from ``observations`` at ``now``; queue the
        notifications to ``notifiers``. Returns the notifications made.

        Not saved: call :meth:`save_if_changed` after the rules of an evaluation."""
        made: list[dict[str, Any]] = []
        with self.lock:
            data = self.data
            seen: set[str] = set()
            for obs in observations:
                alert = data.alerts.get(Alert(rule.name, obs.group).key())
                if alert is None:
                    alert = Alert(rule.name, obs.group)
                seen.add(alert.key())
                self._step(rule, alert, obs.holds, obs.value, obs.detail, now, made)
                self._keep(data, alert, rule, now)
            for key, alert in list(data.alerts.items()):
                if alert.rule == rule.name and key not in seen:
                    self._step(rule, alert, False, None, "", now, made)  # no spans: not holding
                    self._keep(data, alert, rule, now)
            for payload in made:
                data.history.append(payload)
                for name in notifiers:
                    # created: the clock's time (``now`` may be an evaluation's past time)
                    data.outbox.append(Delivery(f"{payload['id']}:{name}", name, payload,
                                                created=time.time()))
            del data.history[:-HISTORY_LIMIT]
            data.evaluated_at = now
        return made

    @staticmethod
    def _keep(data: _File, alert: Alert, rule: ThresholdRule | AnomalyRule, now: float) -> None:
        key = alert.key()
        cooling = alert.last_resolved is not None and now - alert.last_resolved < rule.cooldown
        if alert.status == "ok" and not cooling:
            data.alerts.pop(key, None)
        else:
            data.alerts[key] = alert

    def _step(self, rule: ThresholdRule | AnomalyRule, a: Alert, holds: bool,
              value: float | None, detail: str, now: float, made: list[dict[str, Any]]) -> None:
        if value is not None or not holds:
            a.value = value
        if detail:
            a.detail = detail
        wait = rule.for_seconds if isinstance(rule, ThresholdRule) else 0.0
        if holds:
            if a.status == "ok":
                a.status, a.since = "pending", now
            if a.status == "pending" and now - (a.since or now) >= wait:
                a.status, a.since, a.incident = "firing", now, uuid.uuid4().hex[:16]
                a.notified = False
            if a.status == "firing" and not a.notified:
                cooling = a.last_resolved is not None and now - a.last_resolved < rule.cooldown
                if not cooling:
                    a.notified = True
                    made.append(notification(rule, a, "firing", now))
            return
        if a.status == "firing":
            if a.notified:
                made.append(notification(rule, a, "resolved", now))
                a.last_resolved = now
            else:
                logger.info("alert %r (%s) resolved within its cooldown: not notified",
                            rule.name, group_label(a.group))
        a.status, a.since, a.incident, a.notified = "ok", None, None, False

    # -- the deliverers' side -----------------------------------------------------------

    def due(self, notifier: str) -> Delivery | None:
        """The oldest notification for ``notifier`` (its order is kept: a resolved
        never overtakes its firing)."""
        with self.lock:
            return next((d for d in self.data.outbox if d.notifier == notifier), None)

    def delivered(self, delivery: Delivery) -> None:
        with self.changing() as data:
            data.outbox = [d for d in data.outbox if d.id != delivery.id]

    def failed(self, delivery: Delivery, error: str, next_at: float, give_up: bool) -> None:
        with self.changing() as data:
            for d in data.outbox:
                if d.id == delivery.id:
                    d.attempts += 1
                    d.next_at = next_at
                    d.last_error = error
            if give_up:
                data.outbox = [d for d in data.outbox if d.id != delivery.id]

    def snapshot(self) -> dict[str, Any]:
        """The current alerts (pending and firing), the history (newest first), the
        notifications waiting: for ``GET /api/alerts``."""
        with self.lock:
            alerts = [
                {**a.to_json(), "group": dict(a.group), "group_label": group_label(a.group),
                 "since": _iso(a.since), "last_resolved": _iso(a.last_resolved)}
                for a in self.data.alerts.values() if a.status != "ok"
            ]
            return {
                "evaluated_at": _iso(self.data.evaluated_at),
                "alerts": sorted(alerts, key=lambda a: (a["status"] != "firing", a["rule"])),
                "history": list(reversed(self.data.history)),
                "pending_notifications": [
                    {"id": d.id, "notifier": d.notifier, "attempts": d.attempts,
                     "last_error": d.last_error} for d in self.data.outbox
                ],
            }


def notification(rule: ThresholdRule | AnomalyRule, a: Alert, status: str, now: float
                 ) -> dict[str, Any]:
    """The JSON of one notification (the generic webhook's body)."""
    label = group_label(a.group)
    if isinstance(rule, ThresholdRule):
        what = (f"{rule.metric} {_fmt(rule.metric, a.value)} {rule.comparison} "
                f"{_fmt(rule.metric, rule.threshold)} over {_dur(rule.window)}")
        condition: dict[str, Any] = {
            "metric": rule.metric, "comparison": rule.comparison,
            "threshold": rule.threshold, "window_seconds": rule.window,
            "for_seconds": rule.for_seconds,
        }
    else:
        what = a.detail or f"{rule.signal} anomalous"
        condition = {"signal": rule.signal, "bucket_seconds": rule.bucket}
    word = "FIRING" if status == "firing" else "RESOLVED"
    summary = f"[{word}] {rule.name} ({label}): {what}"
    if status == "resolved":
        summary = f"[{word}] {rule.name} ({label}): back to normal"
    return {
        "id": f"{a.incident}:{status}",
        "incident": a.incident,
        "status": status,
        "rule": rule.name,
        "kind": rule.kind,
        "severity": rule.severity,
        "group": dict(a.group),
        "value": a.value,
        "condition": condition,
        "started_at": _iso(a.since),
        "at": _iso(now),
        "summary": summary,
        "description": rule.description,
    }


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.startswith("latency_"):
        return f"{value:.3g} s"
    if metric == "error_rate":
        return f"{value * 100:.1f}%"
    if metric == "cost":
        return f"${value:,.2f}"
    return f"{value:,.6g}"
