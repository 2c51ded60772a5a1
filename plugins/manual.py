"""Manual provisioning: the module supports no action, so every operation
(create, suspend, resume, change, delete) becomes a manual task for the
instance's department; ``prolong`` and ``sync`` are skipped. A person does the
work and enters the result with TaskComplete (a completed create makes the
service active with the data entered)."""

from __future__ import annotations

from pba_server.sdk import SDK_VERSION, NotSupported, PluginInfo, SettingField
from pba_server.sdk.provisioning import ModuleResult, ProcessingModule, ServiceRequest


class ManualModule(ProcessingModule):
    info = PluginInfo(
        name="manual",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="processing_module",
        description="Every operation is a manual task for the instance's department",
        settings=(
            SettingField(
                "instructions",
                required=False,
                default="",
                description="Shown to staff: how services of this kind are set up",
            ),
        ),
        capabilities=frozenset(),
    )

    def perform(self, request: ServiceRequest) -> ModuleResult:
        raise NotSupported(f"{request.action} is done by hand")


PLUGIN = ManualModule
