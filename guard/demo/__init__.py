"""The demo music platform that ``guard demo`` serves behind the middleware."""
