"""What was stopped: stats, the HTML report, Prometheus metrics."""
