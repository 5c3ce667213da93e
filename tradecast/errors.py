"""The one project error type: every user-facing failure is a TradecastError with a clear message."""


class TradecastError(Exception):
    """A failure the user can act on (bad config, bad input data, missing state)."""


class ConfigError(TradecastError):
    """A configuration file or environment override is wrong."""


class DataValidationError(TradecastError):
    """Input data does not fit the canonical schema; `problems` lists every issue found."""

    def __init__(self, table: str, problems: list) -> None:
        self.table = table
        self.problems = problems
        lines = [f"{table}: {len(problems)} problem(s) found, nothing was written"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))
