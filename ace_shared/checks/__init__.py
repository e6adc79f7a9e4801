"""What the cluster checks share: their JSON result files and self-contained HTML pages."""
