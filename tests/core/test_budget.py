from __future__ import annotations

import asyncio

import pytest

from bot.core.budget import Budget, Reservation, Spend
from bot.llm import ModelInfo, ModelRef
from config.prices import ModelPrice

# $2 per million input tokens, $10 per million output tokens: 1,000 in + 100 out = $0.003.
PRICED = ModelInfo(ModelRef("openai", "m"), ModelPrice(2.0, 10.0))
UNPRICED = ModelInfo(ModelRef("openai", "local"), None)


async def test_a_booking_is_the_worst_case_at_table_prices() -> None:
    budget = Budget(PRICED, max_tokens=100_000, max_cost_usd=1.0)
    booking = await budget.reserve(1000, 100)
    assert isinstance(booking, Reservation)
    assert (booking.input_tokens, booking.output_tokens) == (1000, 100)
    assert booking.cost_usd == pytest.approx(0.003)


async def test_refused_over_the_cost_cap_with_the_reason() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=0.005)
    first = await budget.reserve(1000, 100)
    assert isinstance(first, Reservation)
    await budget.settle(first, Spend(1000, 100, 0.003))
    second = await budget.reserve(1000, 100)  # would reach $0.006
    assert isinstance(second, str)
    assert second == (
        "over the cost cap of $0.01 (ARBITER_MAX_COST_PER_REVIEW_USD): "
        "could cost up to $0.0030, $0.0020 were left"
    )


async def test_refused_over_the_token_budget() -> None:
    budget = Budget(UNPRICED, max_tokens=2000, max_cost_usd=0)
    first = await budget.reserve(1500, 400)
    assert isinstance(first, Reservation)
    await budget.settle(first, Spend(1500, 400))
    assert isinstance(await budget.reserve(10, 90), Reservation)  # exactly the 100 left
    budget = Budget(UNPRICED, max_tokens=2000, max_cost_usd=0)
    first = await budget.reserve(1500, 400)
    assert isinstance(first, Reservation)
    await budget.settle(first, Spend(1500, 400))
    refused = await budget.reserve(10, 91)
    assert refused == (
        "over the token budget of 2,000 (ARBITER_MAX_TOKENS_PER_REVIEW): "
        "needs up to 101 tokens, 100 were left"
    )


async def test_a_call_waits_for_calls_in_flight_then_fits_when_they_settle_low() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=0.005)
    first = await budget.reserve(1000, 100)  # books $0.003 of $0.005
    assert isinstance(first, Reservation)
    waiting = asyncio.create_task(budget.reserve(1000, 100))
    await asyncio.sleep(0)
    assert not waiting.done()  # would pass the cap while the first is only booked
    await budget.settle(first, Spend(500, 10, 0.0011))  # the first was cheaper than booked
    second = await waiting
    assert isinstance(second, Reservation)
    assert budget.spent.cost_usd == pytest.approx(0.0011)


async def test_a_call_waits_then_is_refused_when_the_others_spent_it_all() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=0.005)
    first = await budget.reserve(1000, 100)
    assert isinstance(first, Reservation)
    waiting = asyncio.create_task(budget.reserve(1000, 100))
    await asyncio.sleep(0)
    await budget.settle(first, Spend(1000, 100, 0.003))
    assert isinstance(await waiting, str)


async def test_real_usage_above_the_estimate_raises_later_bookings() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=1.0)
    booking = await budget.reserve(1000, 100)
    assert isinstance(booking, Reservation)
    await budget.settle(booking, Spend(1500, 10, 0.0031))  # the estimate ran 1.5x low
    assert budget.factor == pytest.approx(1.5)
    assert budget.booking(1000, 100).input_tokens == 1500
    cheaper = await budget.reserve(1000, 100)
    assert isinstance(cheaper, Reservation)
    await budget.settle(cheaper, Spend(400, 10, 0.0009))  # a low one does not lower it
    assert budget.factor == pytest.approx(1.5)


async def test_cached_answers_cost_nothing_and_do_not_calibrate() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=1.0)
    booking = await budget.reserve(1000, 100)
    assert isinstance(booking, Reservation)
    await budget.settle(booking, Spend(), cached=True)
    assert budget.spent == Spend()
    assert budget.factor == 1.0


async def test_no_cap_means_only_tokens_count() -> None:
    budget = Budget(PRICED, max_tokens=10**9, max_cost_usd=0)
    assert isinstance(await budget.reserve(10**7, 10**5), Reservation)  # $21, no cap
