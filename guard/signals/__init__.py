"""What guard publishes for crawlers: robots.txt, ai.txt, TDMRep and response headers,
and the RFC 9309 matcher that holds identified crawlers to their robots.txt group."""
