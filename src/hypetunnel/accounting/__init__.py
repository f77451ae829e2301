"""Per-tenant accounting (issue 10, section 2): flow counters turned into monotonic usage."""
