"""TLS fingerprints from the edge: what the trusted proxy computed, compared with a catalogue.

guard reads a JA4 fingerprint from the one header the rules name (CloudFront's
``CloudFront-Viewer-JA4-Fingerprint`` by default), and only when the request came through a
trusted proxy. It computes no fingerprint itself. A browser's User-Agent over an HTTP
library's fingerprint is automation (category ``scraping_tool``); a fingerprint no mainstream
browser has is *rare*, and limits keyed ``fingerprint`` count it across all addresses.
See docs/sweeps.md.
"""
