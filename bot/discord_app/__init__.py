"""The Discord adapter: a thin layer over `bot.service.RagService`.

- `client.RagBot` owns the service, the generation queue and the cogs;
- `queue` runs one generation at a time, fairly shared between users;
- `streaming` shows an answer as it is written, by throttled message edits;
- `run.run_bot` is the launcher the `ragcord bot` command calls.

Only this package imports discord.py.
"""
