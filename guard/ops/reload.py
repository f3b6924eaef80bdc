"""Hot reload: the rules files are watched, and SIGHUP or :meth:`RulesReloader.reload` reloads them.

A reload loads and validates everything off the event loop (in a worker thread), then
swaps it in at once; counters, bans and caches carry over. A file that does not load
keeps the last good rules, and says where it is wrong in the log. Watched: the rules
file, the catalogue it names, the published IP ranges and the signer directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from guard.identity.ranges import HostingRanges, RangeVerifier, hosting_directory
from guard.policy.rules import Policy, load_rules

log = logging.getLogger("guard")

#: Swaps a loaded policy in (raises to refuse it: the previous one stays).
Apply = Callable[[Policy, RangeVerifier, HostingRanges], None]


class RulesReloader:
    """Reloads ``rules_path`` on demand, on SIGHUP and when a watched file changes."""

    def __init__(
        self,
        rules_path: Path | None,
        interval: float,
        *,
        current: Callable[[], Policy],
        apply: Apply,
        ranges_for: Callable[[Policy], Path],
        lock: asyncio.Lock,
    ) -> None:
        self.rules_path = rules_path
        self.interval = interval
        self._current = current
        self._apply = apply
        self._ranges_for = ranges_for
        self._lock = lock
        self._stamps = self.stamps(current())
        self._watcher: asyncio.Task | None = None

    async def reload(self, why: str = "requested") -> bool:
        """Load the rules file again and swap it in; a bad file keeps the last good rules."""
        if self.rules_path is None:
            return False
        async with self._lock:
            try:
                policy = await asyncio.to_thread(load_rules, self.rules_path)
                ranges = self._ranges_for(policy)
                verifier = await asyncio.to_thread(RangeVerifier.from_directory, ranges)
                hosting_dir = hosting_directory(policy.source, ranges)
                hosting = await asyncio.to_thread(HostingRanges.from_directory, hosting_dir)
            except Exception as exc:  # ConfigError above all: say where, keep enforcing the old rules
                log.error("guard: rules not reloaded (%s), keeping the last good rules: %s", why, exc)
                self._stamps = self.stamps(self._current())
                return False
            try:
                self._apply(policy, verifier, hosting)
            except Exception as exc:
                log.error("guard: rules not reloaded (%s), keeping the last good rules: %s", why, exc)
                return False
            self._stamps = self.stamps(policy)
            log.warning("guard: rules reloaded from %s (%s): %d rules", self.rules_path, why, len(policy.rules))
            return True

    def stamps(self, policy: Policy) -> dict[str, float]:
        """Modification times of every file ``policy`` was loaded from (-1: missing)."""
        if self.rules_path is None:
            return {}
        files = [self.rules_path, Path(policy.catalogue.source), *self._ranges_for(policy).glob("*.json")]
        if policy.signatures_file:
            files.append(Path(policy.signatures_file))
        if policy.sessions is not None and policy.sessions.key_file:
            files.append(Path(policy.sessions.key_file))  # a rolled session key is picked up like a rules change
        stamps = {}
        for file in files:
            try:
                stamps[str(file)] = file.stat().st_mtime
            except OSError:
                stamps[str(file)] = -1.0
        return stamps

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Poll the files on ``loop``, and reload on SIGHUP where the loop allows signal handlers."""
        if self.rules_path is None:
            return
        if self.interval > 0:
            self._watcher = loop.create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, ...
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            stamps = await asyncio.to_thread(self.stamps, self._current())
            if stamps != self._stamps:
                await self.reload("file changed")
