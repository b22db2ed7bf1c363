"""Tamper evidence on the command line: ``verify`` and ``anchor``.

``verify`` exits 0 when everything holds, 2 (``LedgerTampered``, as bad input) when any
event, index row, link, anchor or (``--deep``) projection does not, naming each place on
stderr as ``TAMPERED <where>: <why>``. It opens SQLite read-only, so it works on read-only
media; when the ledger can be written it records its result in ``bf_verify``.
"""

from __future__ import annotations

import os
from typing import Any

import click
import orjson
from backflush.cli.app import EXIT_OPERATIONAL, EXIT_USAGE, Fail, cli, open_ledger
from backflush.ledger.store import Ledger


def _writable(ledger: Ledger) -> bool:
    """Whether the store behind ``ledger`` may be written by us (PostgreSQL: assumed)."""
    if ledger.dialect != "sqlite":
        return True
    path = os.path.abspath(ledger.url.removeprefix("sqlite:///"))
    folder = os.path.dirname(path) or "."
    return os.access(path, os.W_OK) and os.access(folder, os.W_OK)


def _anchor_line(ledger: Ledger, key: str | None) -> bytes:
    from backflush.ledger.anchor import AnchorError, sign
    from backflush.ledger.integrity import anchor_of

    a = anchor_of(ledger)
    if key is not None:
        try:
            a = sign(a, key)
        except AnchorError as exc:
            raise Fail(str(exc)) from None
    return orjson.dumps(a)


def check_key(key: str | None) -> None:
    """Fail early (before an import writes anything) when ``key`` cannot sign."""
    if key is None:
        return
    from backflush.ledger.anchor import AnchorError, _load_private

    try:
        _load_private(key)
    except AnchorError as exc:
        raise Fail(str(exc)) from None


def append_anchor(ledger: Ledger, path: str, key: str | None) -> None:
    """Append one anchor line for the ledger as it is now to ``path`` (``import --anchor``)."""
    line = _anchor_line(ledger, key)
    try:
        with open(path, "ab") as fh:
            fh.write(line + b"\n")
    except OSError as exc:
        raise Fail(f"{path}: cannot append the anchor: {exc.strerror or exc}") from None


@cli.command("anchor")
@click.option("--key", default=None, type=click.Path(dir_okay=False),
              help="Sign with this Ed25519 private key (PEM), kept outside the database.")
@click.option("--generate-key", "new_key", default=None, type=click.Path(dir_okay=False),
              help="Write a new Ed25519 key pair to FILE and FILE.pub, then stop.")
@click.pass_context
def anchor_cmd(ctx: click.Context, key: str | None, new_key: str | None) -> None:
    """Print a checkpoint of the ledger as one JSON line: event count, last seq, its
    ledger-wide link, a Merkle root over the streams' heads (optionally signed).

    Keep it outside the database; `verify --anchor FILE` later proves nothing up to it
    was removed, rewritten or re-chained.
    """
    from backflush.ledger.anchor import AnchorError, generate_key

    if new_key is not None:
        try:
            pub = generate_key(new_key)
        except (AnchorError, OSError) as exc:
            raise Fail(f"{new_key}: {getattr(exc, 'strerror', None) or exc}") from None
        click.echo(f"private key {new_key} (keep it away from the ledger), public key {pub}")
        return
    click.echo(_anchor_line(open_ledger(ctx, readonly=True), key).decode())


@cli.command("verify")
@click.option("--anchor", "anchor_file", default=None, type=click.Path(dir_okay=False),
              help="Also check every anchor line of FILE against the events.")
@click.option("--pubkey", default=None, type=click.Path(dir_okay=False),
              help="Require every anchor to be signed by this Ed25519 public key (PEM).")
@click.option("--strict", is_flag=True,
              help="With --anchor: every event must be covered by an anchor (fails on events"
              " recorded after the last one, e.g. a forged append).")
@click.option("--deep", is_flag=True,
              help="Also replay every event and compare with the stored projections.")
@click.pass_context
def verify_cmd(
    ctx: click.Context, anchor_file: str | None, pubkey: str | None, strict: bool, deep: bool
) -> None:
    """Check every event, index column and link: nothing altered, removed, reordered or
    forged (with anchors: nor re-chained)."""
    from backflush.ledger.anchor import AnchorError, load_public
    from backflush.ledger.integrity import (
        Inconclusive,
        check,
        deep_check,
        load_anchors,
        record,
    )

    if pubkey is not None and anchor_file is None:
        raise Fail("--pubkey: only with --anchor FILE")
    if strict and anchor_file is None:
        raise Fail("--strict: only with --anchor FILE")
    anchors: list[tuple[str, dict[str, Any]]] = []
    key = None
    try:
        if anchor_file is not None:
            anchors = load_anchors(anchor_file)
        if pubkey is not None:
            key = load_public(pubkey)
    except AnchorError as exc:
        raise Fail(str(exc)) from None
    ledger = open_ledger(ctx, readonly=True)
    rep = check(ledger, anchors, key, strict=strict)
    writer = Ledger(ledger.url) if _writable(ledger) else None
    try:
        if deep and rep.problems:
            # A replay of altered events proves nothing about the projections, and an
            # edited state need not decode at all.
            rep.notes.append("--deep not run: the checks below failed, and a replay of a"
                             " ledger that fails them proves nothing")
        elif deep:
            problems, notes = deep_check(ledger, writer)
            rep.problems.extend(problems)
            rep.notes.extend(notes)
        if writer is not None:
            record(writer, rep, not rep.problems)
    finally:
        if writer is not None:
            writer.close()
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)
    inconclusive = [n for n in rep.notes if isinstance(n, Inconclusive)]
    if rep.problems:
        for p in rep.problems:
            click.echo(f"TAMPERED {p}", err=True)
        n = len(rep.problems)
        plural = "s" if n != 1 else ""
        click.echo(f"Error: {n} integrity problem{plural} in {rep.events} events", err=True)
        ctx.exit(EXIT_USAGE)
    extra = ""
    if anchors:
        extra += f", {len(anchors)} anchor{'s hold' if len(anchors) != 1 else ' holds'}"
    if deep and not inconclusive:
        extra += ", projections agree with a replay"
    click.echo(
        f"ok: {rep.events} events, every stream's chain and the ledger-wide chain intact{extra}"
    )
    if inconclusive:
        # Not "all clear": what was asked (--deep) was not done; a gate must not pass on it.
        click.echo(f"Error: --deep: {inconclusive[0]}", err=True)
        ctx.exit(EXIT_OPERATIONAL)
