"""Orders: the only way a subscription changes, run through a workflow.

- :mod:`.models` -- orders, their lines and history, workflows;
- :mod:`.workflow` -- workflows as data: validation and the defaults;
- :mod:`.engine` -- the durable step runner (background, exactly once);
- :mod:`.service` -- the API operations;
- :mod:`.provisioner` -- the seam to the provisioning engine.
"""
