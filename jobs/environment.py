"""What every job is given: the clock, the clinic's policy and the notification sender."""

from __future__ import annotations

from dataclasses import dataclass

from models.clock import Clock
from models.notifications import Sender
from models.policy import ClinicPolicy


@dataclass(frozen=True)
class JobEnvironment:
    clock: Clock
    policy: ClinicPolicy
    sender: Sender
