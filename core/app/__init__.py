"""The application's plumbing: settings and config files, the context every front-end shares, the clock,
errors, logging, text catalogs, plug-in discovery, health records and `mleg serve`'s wiring."""
