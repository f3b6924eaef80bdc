"""Canaries: track ids no person can reach, and what guard does when one is fetched.

A canary is a track id that no page, listing or player ever links in the open: ids
derived from a secret (an HMAC of the canary key, so nobody without it can compute
them) inside an id range the application never issues, plus ids the application
registers (unpublished tracks). Links to them are put only where people never look and
honest crawlers are told not to go: a sitemap that robots.txt disallows, and hidden links
in the pages guard serves itself. Whoever fetches one is a scraper: guard answers it as
the application would (a decoy page, JSON or audio) and bans its session, address,
network and TLS fingerprint. See docs/sweeps.md.
"""
