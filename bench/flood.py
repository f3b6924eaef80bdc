"""A scraper that floods the memory store to flush its own budgets: tracks it gets in a simulated day.

Usage: python bench/flood.py [--hours 24] [--flood 60000] [--max-entries 200000] [--save [PATH]]

The shipped rules, the embedded memory store at its shipped size and an injected clock.
Scenarios, each with and without flooding:

* one session: a scraper keeping one proven session, 100 new tracks an hour (under every
  minute and hour limit), stops at 280 tracks, floods, and goes on (refused, it floods
  again every two hours);
* 30 sessions: thirty proven sessions on one address (thirty browsers), paced the same
  way, taking turns, flooding every two hours;
* botnet: the one-session scraper, while others flood for it from many addresses (page
  loads with new User-Agents, and audio with a new session each, one /24 at a time).

A flood is ``--flood`` requests at 90 a second: page loads, each with a new User-Agent,
from the scraper's own address (``own``), or from the botnet's addresses (``botnet``).
Prints the tracks served per scenario; ``--save`` writes them to bench/results/flood.json.
Run it with this tree's guard (``PYTHONPATH=$PWD``) and with another's to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0"
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight
ADDRESS = "198.51.100.7"
FLOOD_RATE = 90.0  # requests a second


class Clock:
    """The simulation's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass(slots=True)
class Outcome:
    """What one simulated day gave the scraper."""

    tracks: int = 0
    refused: int = 0
    floods: int = 0
    banned: bool = False


class Simulation:
    """One scraper against one fresh guard with the shipped rules on the memory store."""

    def __init__(self, max_entries: int, flood: int, flood_kind: str) -> None:
        from guard.policy.engine import Guard
        from guard.policy.rules import load_rules
        from guard.stores.memory import MemoryStore

        self.clock = Clock()
        self.store = MemoryStore(max_entries)
        self.guard = Guard(load_rules(ROOT / "rules" / "default.yaml"), self.store, clock=self.clock)
        self.flood_size, self.flood_kind = flood, flood_kind
        self.track = 0
        self.flooded = 0  # requests sent in floods so far (their addresses and User-Agents are new)

    async def listen(self, session: str, ua: str = CHROME) -> bool:
        """The scraper's next new track's audio with ``session`` (its browser: ``ua``): whether it was served."""
        from guard.sessions.tokens import Session

        self.track += 1
        client = self.guard.resolver.resolve({"client": (ADDRESS, 1), "headers": []})
        proven = Session(session, T0 - 60, state="page", proven_until=T0 + 3 * 86400, platform="windows")
        facts = self.guard.facts(client, ua, f"/tracks/{self.track}/stream", session=proven)
        decision = await self.guard.decide(facts)
        return decision.allowed

    async def flood(self) -> None:
        """``flood_size`` page loads with new User-Agents (from the scraper's address or a botnet's)."""
        from guard.sessions.tokens import Session

        guard, step = self.guard, 1.0 / FLOOD_RATE
        for n in range(self.flooded, self.flooded + self.flood_size):
            ip = ADDRESS if self.flood_kind == "own" else f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            client = guard.resolver.resolve({"client": (ip, 1), "headers": []})
            ua = f"{CHROME} Safari/537.36 flood/{n}"
            await guard.decide(guard.facts(client, ua, f"/tracks/{n % 20 + 1}"))  # under every limit
            if self.flood_kind == "botnet" and n % 2:  # and audio, a new session each: budgets of their own
                session = Session(f"flood{n}", T0 - 60, state="page", proven_until=T0 + 3 * 86400)
                await guard.decide(guard.facts(client, ua, f"/tracks/{n % 20 + 1}/stream", session=session))
            self.clock.now += step
        self.flooded += self.flood_size


async def one_session(sim: Simulation, hours: float, flooding: bool) -> Outcome:
    """One proven session at 100 new tracks an hour; flooding at 280 of the day, and when refused (two hours apart)."""
    out, end, pace = Outcome(), T0 + hours * 3600, 36.0
    today, next_try = 0, 0.0
    while sim.clock.now < end:
        if flooding and (today >= 280 or (out.refused and sim.clock.now >= next_try)):
            await sim.flood()
            out.floods += 1
            today, next_try = 0, sim.clock.now + 7200  # refused after a flood: another in two hours
        if await sim.listen("scraper"):
            out.tracks += 1
            today += 1
        else:
            out.refused += 1
        sim.clock.now += pace
    out.banned = out.refused > 0 and not await sim.listen("scraper")
    return out


async def thirty_sessions(sim: Simulation, hours: float, flooding: bool) -> Outcome:
    """Thirty proven sessions on one address taking turns, each at 100 tracks an hour; a flood every two hours."""
    out, end = Outcome(), T0 + hours * 3600
    pace = 36.0 / 30
    next_flood = T0 + 7200
    turn = 0
    while sim.clock.now < end:
        if flooding and sim.clock.now >= next_flood:
            await sim.flood()
            out.floods += 1
            next_flood += 7200
        if await sim.listen(f"scraper{turn % 30}", f"{CHROME} Safari/537.{turn % 30}"):  # 30 browsers
            out.tracks += 1
        else:
            out.refused += 1
        turn += 1
        sim.clock.now += pace
    return out


SCENARIOS = {
    "one session": (one_session, "own"),
    "30 sessions": (thirty_sessions, "own"),
    "one session, botnet flood": (one_session, "botnet"),
    "30 sessions, botnet flood": (thirty_sessions, "botnet"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--flood", type=int, default=60_000, help="requests per flood")
    parser.add_argument("--max-entries", type=int, default=200_000)
    parser.add_argument("--only", choices=sorted(SCENARIOS), help="run one scenario")
    parser.add_argument("--save", nargs="?", const=str(ROOT / "bench" / "results" / "flood.json"), metavar="PATH")
    args = parser.parse_args()

    import guard

    results = []
    for name, (scenario, kind) in SCENARIOS.items():
        if args.only and name != args.only:
            continue
        for flooding in (False, True):
            if kind == "botnet" and not flooding:
                continue  # the same as without the flood above
            started = time.perf_counter()
            sim = Simulation(args.max_entries, args.flood, kind)
            out = asyncio.run(scenario(sim, args.hours, flooding))
            row = {
                "scenario": name,
                "flooding": flooding,
                "tracks": out.tracks,
                "refused": out.refused,
                "floods": out.floods,
                "flood_requests": sim.flooded,
                "store_entries": len(sim.store),
                "seconds": round(time.perf_counter() - started, 1),
            }
            if scenario is one_session:
                row["banned_at_end"] = out.banned
            results.append(row)
            flood = f"{out.floods} floods of {args.flood:,}" if flooding else "no flood"
            print(f"{name:28} {flood:22} {out.tracks:7,} tracks in {args.hours:g} h, {out.refused:,} refused")
    if args.save:
        report = {
            "guard": "this tree" if Path(guard.__file__).resolve().is_relative_to(ROOT) else guard.__file__,
            "hours": args.hours,
            "flood_requests": args.flood,
            "flood_rate": FLOOD_RATE,
            "max_entries": args.max_entries,
            "results": results,
        }
        Path(args.save).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
