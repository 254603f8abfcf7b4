"""A person's own data: meals, day totals, export and delete (GetMeal, GetDailyTotals,
ExportSamples, DeleteSample).

The servicer's side only: checks, roles and status codes; the logic is in gateway/meals.py,
gateway/meals_days.py, gateway/export.py and gateway/deletion.py.
"""

from __future__ import annotations

import asyncio

import grpc

from foodcal.rpc.errors import abort
from foodcal.store.db import DatabaseUnavailable
from gateway.deletion import delete_sample
from gateway.errors import in_session, translate_errors
from gateway.export import export_samples
from gateway.meals import MAX_MEAL_ID_CHARS, meal
from gateway.meals_days import InvalidDays, daily_totals, days_of

MAX_OWNER_CHARS = 64


class MealDataRPCs:
    """Mixed into GatewayServicer: uses its `db`, `analyzer.images`, `_caller` and `_check_id`."""

    async def GetMeal(self, request, context):
        if not 1 <= len(request.meal_id) <= MAX_MEAL_ID_CHARS:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"meal_id is required, at most {MAX_MEAL_ID_CHARS} characters",
                "INVALID_MEAL_ID",
            )
        owner = self._caller(context).owner_filter
        response = await in_session(context, self.db, lambda session: meal(session, request.meal_id, owner))
        if response is None:
            await abort(
                context, grpc.StatusCode.NOT_FOUND, f"no meal with id {request.meal_id!r}", "MEAL_NOT_FOUND"
            )
        return response

    async def GetDailyTotals(self, request, context):
        try:
            days = days_of(request)
        except InvalidDays as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), error.reason)
        caller = self._caller(context)
        owner = caller.owner_filter
        if request.owner:
            if len(request.owner) > MAX_OWNER_CHARS:
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"owner is at most {MAX_OWNER_CHARS} characters",
                    "INVALID_OWNER",
                )
            if not caller.admin and request.owner != caller.identity:
                await abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "a client token reads its own days only: leave owner empty (admins may name one)",
                    "OWNER_NOT_ALLOWED",
                    required_role="admin",
                )
            owner = request.owner

        def read():
            with self.db.session() as session:
                return daily_totals(session, days, owner)

        try:
            return await asyncio.to_thread(read)
        except DatabaseUnavailable as error:
            await translate_errors(context, error)

    async def ExportSamples(self, request, context):
        try:
            async for record in export_samples(self.db, self._caller(context).owner_filter):
                yield record
        except DatabaseUnavailable as error:
            await translate_errors(context, error)

    async def DeleteSample(self, request, context):
        await self._check_id(context, request.sample_id)
        owner = self._caller(context).owner_filter
        try:
            deleted = await asyncio.to_thread(
                delete_sample, self.db, self.analyzer.images, request.sample_id, owner
            )
        except DatabaseUnavailable as error:
            await translate_errors(context, error)
        if deleted is None:  # another client's sample answers exactly like a missing one
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no sample with id {request.sample_id!r}",
                "SAMPLE_NOT_FOUND",
            )
        return deleted.to_proto()
