"""Provisioning: processing-module instances, services, operations (retried,
then manual tasks), departments and bundles. See :mod:`.registry` for the
seams other features plug into."""
