"""`python -m bench.load.patients EMAIL=TEAM …` (DATABASE_URL from the environment): adds patients
to a seeded database through `models.identity.accounts.create_user`, what `ketafollow create-user` calls,
in one process (one start-up and one password hash instead of one each).

A process of its own per database: Tortoise keeps per-model query state that does not survive
switching between SQLite and PostgreSQL in one process.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime, timedelta

from api.auth.passwords import hash_password
from api.database import open_database
from api.settings import Settings
from models.identity import accounts

PASSWORD = "ketafollow-demo"  # the demo clinic's published password
TIME_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")


async def add_patients(database_url: str, teams: dict[str, str]) -> None:
    password_hash = await hash_password(PASSWORD)
    today = datetime.now(UTC).date()
    async with open_database(Settings(database_url=database_url)):
        for n, (email, team) in enumerate(teams.items()):
            data = accounts.NewUser(
                email=email,
                role=accounts.Role.PATIENT,
                given_name="Load",
                family_name=f"Patient {n + 1:02d}",
                time_zone=TIME_ZONES[n % len(TIME_ZONES)],
                birth_date=date(1975, 1, 1) + timedelta(days=397 * n),
                care_team=team,
            )
            await accounts.create_user(data, password_hash=password_hash, today=today)


if __name__ == "__main__":
    asyncio.run(add_patients(os.environ["DATABASE_URL"], dict(arg.split("=", 1) for arg in sys.argv[1:])))
