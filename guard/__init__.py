"""guard: keeps AI-training crawlers and bulk scrapers off a music platform.

Mount :class:`GuardMiddleware` in front of any ASGI app::

    from guard import GuardMiddleware
    app.add_middleware(GuardMiddleware, rules="rules/default.yaml")
"""

from guard.errors import ConfigError
from guard.middleware import GuardMiddleware
from guard.policy.engine import Decision, Guard
from guard.policy.rules import Policy, load_rules
from guard.policy.tracks import register_track_type
from guard.stores.memory import MemoryStore

__all__ = [
    "ConfigError",
    "Decision",
    "Guard",
    "GuardMiddleware",
    "MemoryStore",
    "Policy",
    "load_rules",
    "register_track_type",
]
__version__ = "0.1.0"
