"""The score of the area that was an old (63-province) province: its current communes
(`domain.legacy`), their indicators for the period summed, scored by `domain.score`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from scoring import adapters, domain
from scoring.domain import CriteriaSet, ScoreResult, SubjectPeriod
from scoring.domain.legacy import area_of, summed


@dataclass(frozen=True)
class AreaCommune:
    code: str
    name: str  # the code while the teams topics have not named it
    province_code: str | None
    indicators: dict[str, float]


@dataclass(frozen=True)
class LegacyArea:
    communes: list[AreaCommune]
    indicators: dict[str, float]
    result: ScoreResult


async def legacy_area(
    session: AsyncSession, *, old_province: str, period: str, criteria: CriteriaSet
) -> LegacyArea:
    """Scored like a unit, with default targets: no target is assigned to an old province."""
    codes = area_of(old_province, await adapters.legacy_predecessors(session, old_province))
    keys = [SubjectPeriod("commune", code, period) for code in codes]
    values = await adapters.indicators_for(session, keys)
    names = await adapters.commune_names(session, codes)
    communes = [
        _commune(code, names.get(code), values[key]) for code, key in zip(codes, keys, strict=True)
    ]
    total = summed(c.indicators for c in communes)
    lengths = await adapters.campaign_lengths(session, [period])
    result = domain.score(
        criteria, total, period=period, targets={}, campaign_days=lengths.get(period)
    )
    return LegacyArea(communes=communes, indicators=total, result=result)


def _commune(code: str, known: tuple[str, str] | None, indicators: dict[str, float]) -> AreaCommune:
    name, province = known if known is not None else (code, None)
    return AreaCommune(code=code, name=name, province_code=province, indicators=indicators)
