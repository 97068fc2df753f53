"""The one way the feeds read outside XML (RSS and Atom, FHRS bulk files, the quality report's
shape sniffing): expat with every DOCTYPE and ENTITY declaration refused before anything is
expanded (XXE, billion laughs), and no parameter entities. The standard library's `xml.etree`
parse functions would expand internal entities; defusedxml is not a dependency for this alone."""

from __future__ import annotations

from typing import NoReturn
from xml.parsers import expat

from merchant_code.feeds.base import FeedError

REFUSED = "a DOCTYPE or ENTITY declaration: refused before any entity is expanded"


def _refuse(*_: object) -> NoReturn:
    raise FeedError(REFUSED)


def parser(encoding: str | None = None, namespace_separator: str | None = None) -> expat.XMLParserType:
    """An expat parser that raises FeedError at the first DOCTYPE or ENTITY declaration."""
    made = (
        expat.ParserCreate(encoding)
        if namespace_separator is None
        else expat.ParserCreate(encoding, namespace_separator)
    )
    made.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    made.StartDoctypeDeclHandler = _refuse
    made.EntityDeclHandler = _refuse
    made.ExternalEntityRefHandler = _refuse
    made.buffer_text = True
    return made
