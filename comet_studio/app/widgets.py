"""Small UI pieces shared by several tabs: the tab page, run pickers and error reporting."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr

from ..core.data.folder import ScanStopped
from .context import AppContext, user_of

__all__ = ["tab_page", "run_dropdown", "refreshed_runs", "run_refresher", "user_errors"]

logger = logging.getLogger(__name__)

# Errors whose message is meant for the user (bad path, unknown run, too few images, ...).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, KeyError, RuntimeError, ScanStopped)


@contextmanager
def tab_page(title: str, tab_id: str, intro: str = "") -> Iterator[gr.Tab]:
    """A tab of the studio (``title`` shown, ``tab_id`` for links and tests), opening with the ``intro``
    paragraph when there is one; the tab's components go inside the ``with`` block."""
    with gr.Tab(title, id=tab_id) as tab:
        if intro:
            gr.Markdown(intro)
        yield tab


def run_dropdown(ctx: AppContext, label: str, elem_id: str, *, optional: bool = False) -> gr.Dropdown:
    """A run picker. Custom values are allowed so API clients can name runs created after the page was
    built; every handler validates the id with ``ctx.run_dir``. With logins the page is built empty (it is
    the same for every user) and each user's runs arrive on page load (``refreshed_runs``)."""
    choices = ctx.run_choices(None)
    if optional:
        choices = [("(none)", "")] + choices
    value = choices[0][1] if choices else None
    return gr.Dropdown(choices=choices, value=value, label=label, elem_id=elem_id, allow_custom_value=True,
                       interactive=True)


def refreshed_runs(ctx: AppContext, current: str | None, *, optional: bool = False,
                   request: gr.Request | None = None) -> gr.Dropdown:
    """The run picker with the runs this user may see; keeps the current choice when it still exists,
    else the newest."""
    choices = ctx.run_choices(user_of(request))
    if optional:
        choices = [("(none)", "")] + choices
    ids = [value for _, value in choices]
    value = current if current in ids else (ids[0] if ids else None)
    return gr.Dropdown(choices=choices, value=value)


def run_refresher(ctx: AppContext, *, optional: bool = False) -> Callable[..., gr.Dropdown]:
    """An event handler ``(current, request) -> refreshed dropdown`` (a tab select, a page load)."""

    def refresh(current: str | None, request: gr.Request):
        return refreshed_runs(ctx, current, optional=optional, request=request)

    return refresh


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show expected failures (bad paths, unknown runs, ...) as a Gradio error with the message only."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            logger.info("%s: %s", fn.__name__, message)
            raise gr.Error(str(message)) from error

    return wrapper
