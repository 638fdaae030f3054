"""The review's budget: tokens and dollars spent, and reserved by calls in flight.

Before a call, `reserve()` books its worst case: the conservative input estimate (scaled up
if an earlier answer showed the estimate running low) plus the full output limit, priced at
the table's rates. It is refused, with the reason, when that could pass MAX_TOKENS_PER_REVIEW
or the cost cap. After the call, `settle()` replaces the booking with the usage the provider
reported. A call that does not fit waits while others are in flight (they usually settle
below what they booked) and is refused only when nothing is left to wait for.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.llm import ModelInfo


@dataclass(frozen=True)
class Reservation:
    estimate: int  # the raw input estimate
    input_tokens: int  # booked: the estimate, calibrated
    output_tokens: int  # booked: the output limit
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Spend:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Budget:
    def __init__(self, model: ModelInfo, *, max_tokens: int, max_cost_usd: float) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.max_cost_usd = max_cost_usd  # 0: no cost cap
        self.spent = Spend()
        self.factor = 1.0  # real input tokens per estimated one, when above 1
        self._booked_tokens = 0
        self._booked_usd = 0.0
        self._in_flight = 0
        self._changed = asyncio.Condition()

    @property
    def capped(self) -> bool:
        return self.max_cost_usd > 0

    def booking(self, estimate: int, output_limit: int) -> Reservation:
        booked_in = math.ceil(estimate * self.factor)
        return Reservation(
            estimate, booked_in, output_limit, self.model.cost(booked_in, output_limit)
        )

    def refusal(self, reservation: Reservation) -> str | None:
        """Why this booking cannot be made now, or None when it fits."""
        tokens_left = self.max_tokens - self.spent.tokens - self._booked_tokens
        if reservation.tokens > tokens_left:
            return (
                f"over the token budget of {self.max_tokens:,} (ARBITER_MAX_TOKENS_PER_REVIEW): "
                f"needs up to {reservation.tokens:,} tokens, {max(tokens_left, 0):,} were left"
            )
        if self.capped:
            usd_left = self.max_cost_usd - self.spent.cost_usd - self._booked_usd
            if reservation.cost_usd > usd_left:
                return (
                    f"over the cost cap of ${self.max_cost_usd:.2f} "
                    f"(ARBITER_MAX_COST_PER_REVIEW_USD): could cost up to "
                    f"${reservation.cost_usd:.4f}, ${max(usd_left, 0):.4f} were left"
                )
        return None

    async def reserve(self, estimate: int, output_limit: int) -> Reservation | str:
        """Book a call's worst case; the reason (a str) when it cannot fit."""
        async with self._changed:
            while True:
                reservation = self.booking(estimate, output_limit)
                reason = self.refusal(reservation)
                if reason is None:
                    self._booked_tokens += reservation.tokens
                    self._booked_usd += reservation.cost_usd
                    self._in_flight += 1
                    return reservation
                if self._in_flight == 0:
                    return reason
                await self._changed.wait()

    async def settle(self, reservation: Reservation, spent: Spend, *, cached: bool = False) -> None:
        """Replace the booking with what the call was billed."""
        async with self._changed:
            self._booked_tokens -= reservation.tokens
            self._booked_usd -= reservation.cost_usd
            self._in_flight -= 1
            self.spent = Spend(
                self.spent.input_tokens + spent.input_tokens,
                self.spent.output_tokens + spent.output_tokens,
                self.spent.cost_usd + spent.cost_usd,
            )
            if not cached and reservation.estimate > 0 and spent.input_tokens > 0:
                self.factor = max(self.factor, spent.input_tokens / reservation.estimate)
            self._changed.notify_all()


# --- The daily budget (ARBITER_DAILY_BUDGET_USD) runs by the UTC day ---------------------------


def seconds_to_next_utc_day(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - moment).total_seconds()


def utc_day_start(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
