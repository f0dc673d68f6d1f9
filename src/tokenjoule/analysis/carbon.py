"""Carbon and cost beside every kWh: grams CO2e from a grid intensity, cost from a price, and a
data-centre overhead (PUE) between the device energy and what the facility draws.

The intensity is either given (`carbon_intensity_g_per_kwh`) or looked up by region in the
tables shipped under analysis/data (copied from CodeCarbon 3.3.2, MIT; sources and years in
analysis/data/CARBON_SOURCES.md). A region that is not in the tables is an error, never a
guessed number; with neither an intensity nor a region there is no carbon figure (None).

    >>> fp = Footprint.resolve(region="FRA", price_per_kwh=0.2, pue=1.5)
    >>> round(fp.intensity_g_per_kwh, 3), fp.intensity_source
    (56.039, 'France (FRA), 2023: CodeCarbon 3.3.2 grid table (Our World in Data / Ember)')
    >>> r = fp.of_energy_j(3.6e6)  # 1 kWh at the device
    >>> r["facility_kwh"], round(r["co2e_g"], 2), round(r["cost"], 2)
    (1.5, 84.06, 0.3)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional

from tokenjoule.errors import TokenjouleError

J_PER_KWH = 3.6e6
SOURCE_LABEL = "CodeCarbon 3.3.2 grid table (Our World in Data / Ember)"
CLOUD_LABEL = "CodeCarbon 3.3.2 cloud table"


@lru_cache(maxsize=1)
def _grid() -> dict[str, dict[str, str]]:
    text = resources.files("tokenjoule.analysis").joinpath("data", "grid_intensity.csv").read_text("utf-8")
    return {r["iso_code"].upper(): r for r in csv.DictReader(text.splitlines())}


@lru_cache(maxsize=1)
def _cloud() -> dict[str, dict[str, str]]:
    text = resources.files("tokenjoule.analysis").joinpath("data", "cloud_regions.csv").read_text("utf-8")
    return {f"{r['provider']}:{r['region']}".lower(): r for r in csv.DictReader(text.splitlines())}


def region_intensity(code: str) -> tuple[float, str]:
    """(g CO2e per kWh, source label) of a country (ISO alpha-3, e.g. USA, FRA; or its name) or
    a cloud region (`gcp:europe-west1`)."""
    key = code.strip()
    if ":" in key:
        row = _cloud().get(key.lower())
        if row is None:
            raise TokenjouleError(f"unknown cloud region {code!r}; valid: {', '.join(sorted(_cloud())[:8])}, ... "
                                  "(or a country code such as USA, FRA, DEU, or --carbon-intensity G_PER_KWH)")
        return float(row["carbon_intensity_g_per_kwh"]), f"{key.lower()}: {CLOUD_LABEL} ({row['source']})"
    grid = _grid()
    row = grid.get(key.upper()) or next((r for r in grid.values() if r["country_name"].lower() == key.lower()), None)
    if row is None:
        raise TokenjouleError(f"unknown region {code!r}; give an ISO 3166 alpha-3 country code (e.g. USA, FRA, "
                              "DEU, IND, CHN), a cloud region such as gcp:europe-west1, or --carbon-intensity G_PER_KWH")
    return (float(row["carbon_intensity_g_per_kwh"]),
            f"{row['country_name']} ({row['iso_code']}), {row['year']}: {SOURCE_LABEL}")


@dataclass(frozen=True)
class Footprint:
    """How to turn device joules into facility kWh, grams CO2e and cost."""

    intensity_g_per_kwh: Optional[float] = None
    intensity_source: Optional[str] = None
    price_per_kwh: Optional[float] = None
    pue: float = 1.0

    @classmethod
    def resolve(cls, carbon_intensity_g_per_kwh: Optional[float] = None, region: Optional[str] = None,
                price_per_kwh: Optional[float] = None, pue: Optional[float] = None) -> "Footprint":
        if carbon_intensity_g_per_kwh is not None and region:
            raise TokenjouleError("give --carbon-intensity or --region, not both")
        if carbon_intensity_g_per_kwh is not None and carbon_intensity_g_per_kwh < 0:
            raise TokenjouleError(f"--carbon-intensity must be >= 0 g CO2e/kWh, got {carbon_intensity_g_per_kwh}")
        if price_per_kwh is not None and price_per_kwh < 0:
            raise TokenjouleError(f"--price must be >= 0 per kWh, got {price_per_kwh}")
        pue = 1.0 if pue is None else pue
        if pue < 1.0:
            raise TokenjouleError(f"--pue must be >= 1.0 (facility energy / IT energy), got {pue}")
        source = None
        if region:
            carbon_intensity_g_per_kwh, source = region_intensity(region)
        elif carbon_intensity_g_per_kwh is not None:
            source = "given with --carbon-intensity"
        return cls(carbon_intensity_g_per_kwh, source, price_per_kwh, pue)

    @property
    def active(self) -> bool:
        return self.intensity_g_per_kwh is not None or self.price_per_kwh is not None or self.pue != 1.0

    def of_energy_j(self, energy_j: Optional[float]) -> dict[str, Any]:
        """kWh at the device and the facility, grams CO2e and cost (None where not computable)."""
        if energy_j is None:
            return {"kwh": None, "facility_kwh": None, "co2e_g": None, "cost": None}
        kwh = energy_j / J_PER_KWH
        facility = kwh * self.pue
        return {
            "kwh": kwh, "facility_kwh": facility,
            "co2e_g": None if self.intensity_g_per_kwh is None else facility * self.intensity_g_per_kwh,
            "cost": None if self.price_per_kwh is None else facility * self.price_per_kwh,
        }

    def describe(self, energy_j: Optional[float]) -> str:
        """`0.00123 kWh (x PUE 1.2 = 0.00148 kWh) = 0.083 g CO2e, cost 0.0003` for a CLI line."""
        r = self.of_energy_j(energy_j)
        if r["kwh"] is None:
            return "n/a"
        parts = [f"{r['kwh']:.6g} kWh"]
        if self.pue != 1.0:
            parts[0] += f" (x PUE {self.pue:g} = {r['facility_kwh']:.6g} kWh)"
        if r["co2e_g"] is not None:
            parts.append(f"{r['co2e_g']:.4g} g CO2e")
        if r["cost"] is not None:
            parts.append(f"cost {r['cost']:.4g}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"carbon_intensity_g_per_kwh": self.intensity_g_per_kwh, "carbon_intensity_source": self.intensity_source,
                "price_per_kwh": self.price_per_kwh, "pue": self.pue}

    def note(self) -> Optional[str]:
        if self.intensity_g_per_kwh is None:
            return None
        return f"carbon intensity {self.intensity_g_per_kwh:g} g CO2e/kWh ({self.intensity_source})"
