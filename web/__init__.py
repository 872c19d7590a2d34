"""The staff web console: a front-end of its own beside bot/ and mail/, on the same core and thread state."""
