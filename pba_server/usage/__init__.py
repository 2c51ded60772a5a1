"""Usage: metered resource usage reported per subscription, billed as overage by the billing run."""
