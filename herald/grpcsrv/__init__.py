"""gRPC plumbing shared by the four services: server bootstrap, errors, auth metadata."""
