"""Artists' consent to AI use: the registry of opt-ins, licences, pay per crawl and the ledger (docs/consent.md)."""
