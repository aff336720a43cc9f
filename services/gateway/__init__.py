"""The REST gateway: GOV.UK Notify's v2 API over HTTP, translated to Herald's gRPC services."""
