"""What a bound student can have done, one module an action: each offers the action (or says why
not), asks its confirmation's question, and does it once confirmed (a `do_*` flow, run by the menu)."""
