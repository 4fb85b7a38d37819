"""One collapsible group per workflow step; each forwards to the core."""
