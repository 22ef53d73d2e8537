"""study: the tiny end-to-end demo study that `make demo` runs, stage by stage through their CLIs."""
