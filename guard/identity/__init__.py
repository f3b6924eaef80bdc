"""Who is asking: the client's address, the crawler catalogue, User-Agent identification,
and verification of claimed crawlers (published IP ranges, reverse DNS, signatures)."""
