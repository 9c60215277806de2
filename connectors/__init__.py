"""Adapters to the systems the federation does not own: social security, housing, transport, members' systems."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the connector routes, sync jobs, commands and sandboxes (each connector adds its own lines here)."""
    from connectors.framework import api, models
    from connectors.framework import service as framework
    from connectors.framework.cli import connectors, sandbox

    _ = models  # the table joins the schema's metadata
    registry.on_services(framework.register)
    registry.add_routes(api.routes)
    registry.add_command(connectors)
    registry.add_command(sandbox)

    from connectors.framework.sandbox import register_sandbox
    from connectors.social_security import api as social_security_api
    from connectors.social_security import demo as social_security_demo
    from connectors.social_security import sandbox as social_security_sandbox
    from connectors.social_security import tasks as social_security_tasks

    registry.add_routes(social_security_api.routes)
    registry.on_services(social_security_tasks.register)
    registry.on_demo(social_security_demo.load)
    for system, (factory, port) in social_security_sandbox.FACTORIES.items():
        register_sandbox(system, factory, port)

    from connectors.hospital_systems import demo as hospital_systems_demo
    from connectors.hospital_systems import sandbox as hospital_systems_sandbox
    from connectors.hospital_systems import tasks as hospital_systems_tasks

    registry.on_services(hospital_systems_tasks.register)
    registry.on_demo(hospital_systems_demo.load)
    register_sandbox("hospital_systems", hospital_systems_sandbox.create_app, hospital_systems_demo.PORT)

    from connectors.housing import api as housing_api
    from connectors.housing import cli as housing_cli
    from connectors.housing import demo as housing_demo
    from connectors.housing import models as housing_models
    from connectors.housing import sandbox as housing_sandbox
    from connectors.housing import tasks as housing_tasks

    _ = housing_models
    registry.add_routes(housing_api.routes)
    registry.add_command(housing_cli.certificate)
    registry.on_services(housing_tasks.register)
    registry.on_demo(housing_demo.load)
    register_sandbox("housing", housing_sandbox.create_app, housing_demo.PORT)

    from connectors.transport import api as transport_api
    from connectors.transport import demo as transport_demo
    from connectors.transport import models as transport_models
    from connectors.transport import sandbox as transport_sandbox
    from connectors.transport import tasks as transport_tasks

    _ = transport_models
    registry.add_routes(transport_api.routes)
    registry.on_services(transport_tasks.register)
    registry.on_demo(transport_demo.load)
    register_sandbox("transport", transport_sandbox.create_app, transport_demo.PORT)

    from connectors.library_systems import demo as library_systems_demo
    from connectors.library_systems import sandbox as library_systems_sandbox
    from connectors.library_systems import tasks as library_systems_tasks

    registry.on_services(library_systems_tasks.register)
    registry.on_demo(library_systems_demo.load)
    register_sandbox("library_systems", library_systems_sandbox.create_app, library_systems_demo.PORT)
