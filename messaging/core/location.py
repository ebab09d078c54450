"""A device's approximate position on the messages it sends out, when its owner shares it.

Some networks (RockBLOCK: Iridium's estimate, with its accuracy as a CEP radius in km) tell us roughly where a
device was when it sent a message. That is stored with the message; it goes out with the email or SMS only when
the device's owner has turned location sharing on, as a short OpenStreetMap link and the accuracy. Only a
device's own messages ever carry its position. Pure.
"""

from __future__ import annotations

import math

OSM = "https://www.openstreetmap.org/"


def zoom_for(cep_km: float | None) -> int:
    """An OpenStreetMap zoom that shows about the area the position is accurate to."""
    if cep_km is None or cep_km <= 0:
        return 12
    for zoom, within_km in ((15, 0.5), (14, 1), (13, 3), (12, 10), (11, 20), (10, 40), (9, 80), (8, 160)):
        if cep_km <= within_km:
            return zoom
    return 6


def accuracy_text(cep_km: float | None) -> str:
    """``±8 km``; empty when the accuracy is unknown."""
    if cep_km is None or not math.isfinite(cep_km) or cep_km < 0:
        return ""
    return f"±{cep_km:.0f} km" if cep_km >= 10 or cep_km == int(cep_km) else f"±{cep_km:.1f} km"


def map_link(latitude: float, longitude: float, cep_km: float | None = None) -> str:
    """A short OpenStreetMap link with a marker at the position, zoomed to its accuracy."""
    lat, lon = f"{latitude:.4f}", f"{longitude:.4f}"
    return f"{OSM}?mlat={lat}&mlon={lon}#map={zoom_for(cep_km)}/{lat}/{lon}"


def position_line(latitude: float | None, longitude: float | None, cep_km: float | None = None) -> str:
    """``Position (±8 km): <link>``; empty without a usable position."""
    if latitude is None or longitude is None or not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return ""
    accuracy = accuracy_text(cep_km)
    return f"Position{f' ({accuracy})' if accuracy else ''}: {map_link(latitude, longitude, cep_km)}"


def with_position(
    text: str, *, share: bool, latitude: float | None, longitude: float | None, cep_km: float | None = None
) -> str:
    """The text that goes out: with the position line when the owner shares their location and there is one."""
    line = position_line(latitude, longitude, cep_km) if share else ""
    if not line:
        return text
    return f"{text.rstrip()}\n\n{line}" if text.strip() else line
