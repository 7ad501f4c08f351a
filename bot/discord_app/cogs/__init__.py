"""One cog per concern; each module ends with `async def setup(bot)` (loaded by `RagBot.setup_hook`)."""
