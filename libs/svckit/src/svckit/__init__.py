"""Shared service kit: settings, logging, telemetry, gRPC bootstrap, health, errors, metrics."""
