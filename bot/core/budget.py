"""The review's budget: tokens and dollars spent, and reserved by calls in flight.

Before a call, `book()` (or `reserve()`, which waits) reserves its worst case: the input as
counted (exact for OpenAI's models; scaled up if an answer showed the count running low) plus
the output limit the call is sent, priced at the table's rates (the prompt-cache write at its
price). It is refused, with the reason, when that could pass MAX_TOKENS_PER_REVIEW or the cost
cap: input plus output reserved never exceed them. After the call, `settle()` replaces the
booking with the usage the provider reported, and what the call did not use is free again
for the next chunk (`input_room()` says how much input the next call may send).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.llm import ModelInfo


@dataclass(frozen=True)
class Reservation:
    estimate: int  # the input as counted
    input_tokens: int  # booked: the count, calibrated
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

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def booking(self, estimate: int, output_limit: int, *, cache_write: int = 0) -> Reservation:
        booked_in = math.ceil(estimate * self.factor)
        cost = self.model.cost(booked_in, output_limit, cache_write_tokens=cache_write)
        return Reservation(estimate, booked_in, output_limit, cost)

    def input_room(self, output_limit: int, *, cache_write: int = 0) -> int:
        """The most input tokens (as counted) a call reserving `output_limit` output tokens
        may send now, within the token budget and the cost cap; negative when none."""
        tokens = self.max_tokens - self.spent.tokens - self._booked_tokens - output_limit
        room = math.floor(tokens / self.factor)
        price = self.model.price
        if self.capped and price is not None:
            usd = self.max_cost_usd - self.spent.cost_usd - self._booked_usd
            usd -= self.model.cost(0, output_limit)
            premium = max((price.cache_write_per_mtok or 0) - price.input_per_mtok, 0)
            usd -= cache_write * premium / 1_000_000
            per_token = price.input_per_mtok / 1_000_000 * self.factor
            if per_token > 0:
                room = min(room, math.floor(usd / per_token * 0.999999))
        return room

    def cost_binds(self, output_limit: int) -> bool:
        """Whether the cost cap, rather than the token budget, limits the next call."""
        if not self.capped:
            return False
        tokens = self.max_tokens - self.spent.tokens - self._booked_tokens - output_limit
        return self.input_room(output_limit) < math.floor(tokens / self.factor)

    def book(self, estimate: int, output_limit: int, *, cache_write: int = 0) -> Reservation | str:
        """Book a call's worst case now, or the reason (a str) it does not fit now."""
        reservation = self.booking(estimate, output_limit, cache_write=cache_write)
        reason = self.refusal(reservation)
        if reason is not None:
            return reason
        self._booked_tokens += reservation.tokens
        self._booked_usd += reservation.cost_usd
        self._in_flight += 1
        return reservation

    async def changed(self) -> None:
        """Wait until a call in flight settles (at once when none is in flight)."""
        async with self._changed:
            if self._in_flight:
                await self._changed.wait()

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
                booked = self.book(estimate, output_limit)
                if not isinstance(booked, str) or self._in_flight == 0:
                    return booked
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
