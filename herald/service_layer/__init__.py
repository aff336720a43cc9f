"""Use cases: what each entrypoint (gRPC servicer, queue consumer, scheduled task) asks of the kernel."""
