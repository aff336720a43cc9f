"""The scheduler service: periodic tasks, each run once across replicas, and operators' gRPC view of them."""
