"""The four deployable services; each is a thin composition root over the `herald` kernel."""
