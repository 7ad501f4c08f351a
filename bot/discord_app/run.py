"""The launcher behind `ragcord bot`: logging, token checks, start-up errors that say what to do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.settings import Settings

if TYPE_CHECKING:
    from bot.service import RagService

log = logging.getLogger(__name__)

PORTAL = "https://discord.com/developers/applications"


def setup_logging() -> None:
    """A long-running bot logs its life at INFO: discord.py's format if nobody configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        discord.utils.setup_logging(level=logging.INFO)
    logging.getLogger("bot").setLevel(logging.INFO)
    logging.getLogger("discord.http").setLevel(logging.WARNING)


def run_bot(
    settings: Settings,
    *,
    sync: bool = False,
    service_factory: Callable[[], RagService] | None = None,
) -> int:
    """Serve Discord until interrupted. Returns the process exit code.

    `sync` registers the slash commands with Discord first (needed once, and after
    commands change). `service_factory` replaces the service built from settings (tests).
    """
    setup_logging()
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        log.error(
            "DISCORD_TOKEN is not set. Create a bot at %s (your application > Bot > Reset Token), "
            "then put DISCORD_TOKEN=... in .env or the environment. See docs/discord.md.",
            PORTAL,
        )
        return 2

    from bot.discord_app.client import RagBot

    if service_factory is None:
        from bot.service import RagService

        def service_factory() -> RagService:
            return RagService.from_settings(settings)

    bot = RagBot(settings, service_factory=service_factory, sync_commands=sync)

    async def serve() -> None:
        # SIGTERM (systemctl stop, docker stop) closes the connection like Ctrl-C does,
        # instead of killing the process where it stands.
        main = asyncio.current_task()
        terminated = False

        def on_sigterm() -> None:
            nonlocal terminated
            log.info("SIGTERM received: closing the Discord connection")
            terminated = True
            if main is not None:
                main.cancel()

        # not on Windows, nor outside the main thread (tests run the bot in a thread)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            async with bot:
                await bot.start(token)
        except asyncio.CancelledError:
            if not terminated:
                raise

    try:
        asyncio.run(serve())
    except discord.LoginFailure:
        log.error(
            "Discord rejected the token (401). Copy a fresh one from %s > your application > Bot > "
            "Reset Token into DISCORD_TOKEN.",
            PORTAL,
        )
        return 1
    except discord.PrivilegedIntentsRequired:
        log.error(
            'Discord refused the connection: the bot needs the privileged "Message Content Intent". '
            "Switch it on at %s > your application > Bot > Privileged Gateway Intents, then start again.",
            PORTAL,
        )
        return 1
    except KeyboardInterrupt:
        log.info("stopped")
        return 0
    except Exception as exc:
        log.error("the bot stopped: %s", exc, exc_info=True)
        return 1
    log.info("stopped")
    return 0
