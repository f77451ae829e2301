"""Placeholder: filled in by the lead."""

import typer

app = typer.Typer(no_args_is_help=True)
