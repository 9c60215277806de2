"""``twincity certificate verify FILE --keys KEYS``: check a deposit certificate offline, with no server and no
database, against a saved copy of the published key set (``GET /api/v1/housing/keys``) or a single JWK."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click


@click.group()
def certificate() -> None:
    """Signed certificates (缴存证明) the federation issues."""


@certificate.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--keys",
    "keys_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the published key set (JSON from GET /api/v1/housing/keys) or one JWK",
)
@click.option("--at", "at", default=None, help="check as of this ISO instant instead of now")
def verify(file: Path, keys_file: Path, at: str | None) -> None:
    """Exit 0 when the certificate is genuine and in force; otherwise say why (changed, expired, ...) and exit 1."""
    from connectors.housing import signing

    try:
        keys = signing.keys_from_jwks(json.loads(keys_file.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        raise click.ClickException(f"{keys_file}: not a key set ({e})") from None
    now = None
    if at is not None:
        try:
            now = dt.datetime.fromisoformat(at)
        except ValueError:
            raise click.ClickException("--at must be an ISO 8601 instant with a time zone") from None
        if now.tzinfo is None:
            raise click.ClickException("--at must be an ISO 8601 instant with a time zone")
    verdict = signing.verify(file.read_bytes(), keys, now=now)
    if not verdict.valid:
        raise click.ClickException(f"{verdict.status}: {verdict.detail}")
    payload = verdict.payload or {}
    holder = payload.get("holder", {}).get("name", "?")
    centre = payload.get("fund_centre", {}).get("name", "?")
    click.echo(f"valid: {verdict.detail}; certificate {payload.get('id')} for {holder} at {centre}")
