"""CPU package and DRAM energy from RAPL through the Linux powercap interface.

/sys/class/powercap/intel-rapl:N is a CPU package (name `package-N`), intel-rapl:N:M its
subdomains (`core`, `uncore`, `dram`); `psys` (the whole platform, on some laptops) is not a
package and is skipped so nothing is counted twice. Each domain has a cumulative `energy_uj`
that wraps at `max_energy_range_uj`. AMD Zen CPUs expose the same tree on recent kernels.

Where a value cannot be read, the energy is None and the reason says exactly why (no
powercap directory, no RAPL domains, permission denied...). It is never reported as 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

RAPL_ROOT = "/sys/class/powercap"
_TOP = re.compile(r"^intel-rapl:(\d+)$")
_SUB = re.compile(r"^intel-rapl:(\d+):(\d+)$")


@dataclass(frozen=True)
class RaplDomain:
    path: str
    name: str
    kind: str  # "package" | "dram"
    max_range_uj: int | None


@dataclass(frozen=True)
class RaplEnergy:
    cpu_energy_j: float | None
    cpu_energy_reason: str | None
    dram_energy_j: float | None
    dram_energy_reason: str | None


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class RaplReader:
    """Discovers the domains once; `read()` snapshots counters, `energy_between()` diffs them."""

    def __init__(self, root: str = RAPL_ROOT):
        self.root = root
        self.domains: list[RaplDomain] = []
        self.cpu_reason: str | None = None
        self.dram_reason: str | None = None
        self._discover()

    def _discover(self) -> None:
        if not os.path.isdir(self.root):
            self.cpu_reason = self.dram_reason = (
                f"RAPL unreadable: no {self.root} (kernel without powercap, or a VM/container without it)"
            )
            return
        entries = sorted(os.listdir(self.root))
        for entry in entries:
            top, sub = _TOP.match(entry), _SUB.match(entry)
            if not (top or sub):
                continue
            path = os.path.join(self.root, entry)
            try:
                name = _read_text(os.path.join(path, "name"))
            except OSError:
                continue
            if top and name.startswith("package"):
                kind = "package"
            elif name == "dram":
                kind = "dram"
            else:
                continue  # core/uncore are inside the package; psys overlaps everything
            try:
                max_range = int(_read_text(os.path.join(path, "max_energy_range_uj")))
            except (OSError, ValueError):
                max_range = None
            self.domains.append(RaplDomain(path, name, kind, max_range))
        packages = [d for d in self.domains if d.kind == "package"]
        drams = [d for d in self.domains if d.kind == "dram"]
        if not packages:
            self.cpu_reason = f"RAPL unreadable: no intel-rapl package domain under {self.root}"
        if not drams:
            self.dram_reason = f"RAPL has no DRAM domain under {self.root} (this CPU or kernel does not expose one)"
        # Reading energy_uj needs root on Linux >= 5.10 (CVE-2020-8694): check now, not mid-run.
        for group, attr in ((packages, "cpu_reason"), (drams, "dram_reason")):
            for d in group:
                reason = self._check_readable(d)
                if reason:
                    setattr(self, attr, reason)
                    break

    @staticmethod
    def _check_readable(domain: RaplDomain) -> str | None:
        path = os.path.join(domain.path, "energy_uj")
        try:
            int(_read_text(path))
        except PermissionError:
            return (
                f"RAPL unreadable: permission denied on {path} (root only since Linux 5.10; "
                f"grant read access, e.g. sudo chmod a+r {os.path.dirname(domain.path)}/intel-rapl:*/energy_uj)"
            )
        except (OSError, ValueError) as exc:
            return f"RAPL unreadable: {path}: {exc}"
        return None

    @property
    def available(self) -> bool:
        return self.cpu_reason is None or self.dram_reason is None

    def read(self) -> dict[str, int | None]:
        """Counter value (uJ) of every domain; None where this read failed."""
        values: dict[str, int | None] = {}
        for d in self.domains:
            try:
                values[d.path] = int(_read_text(os.path.join(d.path, "energy_uj")))
            except (OSError, ValueError):
                values[d.path] = None
        return values

    def _sum(self, kind: str, start: dict, end: dict) -> tuple[float | None, str | None]:
        total_uj = 0
        for d in (d for d in self.domains if d.kind == kind):
            a, b = start.get(d.path), end.get(d.path)
            if a is None or b is None:
                return None, f"RAPL read failed for {d.path} during the window"
            delta = b - a
            if delta < 0:  # the counter wrapped (once: windows are far shorter than a wrap)
                if d.max_range_uj is None:
                    return None, f"RAPL counter {d.path} wrapped and max_energy_range_uj is unreadable"
                delta += d.max_range_uj
            total_uj += delta
        return total_uj / 1e6, None

    def energy_between(self, start: dict, end: dict) -> RaplEnergy:
        cpu, cpu_reason = (None, self.cpu_reason) if self.cpu_reason else self._sum("package", start, end)
        dram, dram_reason = (None, self.dram_reason) if self.dram_reason else self._sum("dram", start, end)
        return RaplEnergy(cpu, cpu_reason, dram, dram_reason)
